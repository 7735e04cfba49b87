"""An exported ONNX file as an MLflow model (``mlflow.onnx`` flavour): signature, input example, logged model.

The registry's versions point at this logged model (``models:/<model_id>``), so
``mlflow.pyfunc.load_model("models:/NAME@validated")`` loads it; with several inputs (``x``, ``noise``) pyfunc
takes a dict of arrays and returns a dict of outputs (``y``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

EXAMPLE_ROWS = 5


def graph_inputs(model) -> list:
    """The graph inputs that are fed at run time (initializers excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _spec(value_info):
    from mlflow.types import TensorSpec
    from onnx import helper

    t = value_info.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
    return TensorSpec(np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)), shape, value_info.name)


def signature(model):
    """A tensor signature from the ONNX graph: its named inputs (``x``, ``noise``) and outputs (``y``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema

    return ModelSignature(inputs=Schema([_spec(i) for i in graph_inputs(model)]),
                          outputs=Schema([_spec(o) for o in model.graph.output]))


def input_example(model, given: Mapping[str, np.ndarray] | None = None, rows: int = EXAMPLE_ROWS,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """One array per graph input: ``given[name]`` (first ``rows`` rows) where supplied, else of the input's shape
    (dynamic axes = ``rows``): standard normal for float inputs (``noise``), zeros for integer and bool ones."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    out = {}
    for vi in graph_inputs(model):
        t = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        if given is not None and vi.name in given:
            out[vi.name] = np.ascontiguousarray(np.asarray(given[vi.name])[:rows], dtype=dtype)
            continue
        shape = [d.dim_value if d.HasField("dim_value") else rows for d in t.shape.dim]
        floating = np.issubdtype(dtype, np.floating)
        out[vi.name] = rng.standard_normal(shape).astype(dtype) if floating else np.zeros(shape, dtype)
    return out


def requirements() -> list[str]:
    """Pinned runtime requirements of the pyfunc model (no inference subprocess at log time)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "onnx", "onnxruntime", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            reqs.append(f"{pkg}=={version(pkg)}")
    return reqs


@contextlib.contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a call (``mlflow.onnx.log_model``; the registry resolving a
    ``models:/<id>`` source), then restore MLflow's globals and the ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI``
    variables (which ``set_tracking_uri`` overwrites): a job that fell back to the local store must not reach the
    unreachable server given in the environment."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {k: os.environ.get(k) for k in keys}
    saved = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def log_onnx_model(client, uri: str, run_id: str, name: str, onnx_path: str | Path,
                   example: Mapping[str, np.ndarray] | None = None, tags: Mapping[str, str] | None = None,
                   card: str | Path | None = None) -> str:
    """Log ``onnx_path`` as an MLflow ONNX model of run ``run_id`` (its experiment); returns the logged model id.

    The ONNX bytes are stored as one file (``model.onnx``, no external data), so its sha256 is the file's; the
    model ``card`` goes along as ``extra_files/<NAME>.json`` (read by ``flashsim simulate --models models:/...``)."""
    import mlflow.onnx
    import onnx

    model = onnx.load(str(onnx_path))
    exp = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(exp, name=name, source_run_id=run_id, model_type="onnx",
                                        tags=dict(tags or {}))
    with fluent_uri(uri):
        mlflow.onnx.log_model(model, name=name, model_id=logged.model_id, run_id=run_id,
                              signature=signature(model), input_example=input_example(model, example),
                              pip_requirements=requirements(), save_as_external_data=False,
                              onnx_execution_providers=["CPUExecutionProvider"],
                              extra_files=[str(card)] if card is not None and Path(card).is_file() else None)
    return logged.model_id
