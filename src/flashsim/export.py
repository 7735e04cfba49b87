"""Export to ONNX (torch and LightGBM), model cards, and the native-vs-onnxruntime parity gate.

ONNX IO convention (see notes/interfaces.md): input ``x`` float32 [N, F] in physical units, generative models also
``noise`` float32 [N, Z] standard normal, output ``y`` float32 [N, K] (classifiers: probabilities [N, C]).
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flashsim.errors import GateError
from flashsim.io.atomic import atomic_output, write_json
from flashsim.mlops.provenance import file_sha256

log = logging.getLogger(__name__)

OPSET = 17


# ---------------------------------------------------------------- torch
def export_torch(module, path: str | Path, n_features: int, noise_dim: int = 0, opset: int = OPSET) -> Path:
    """Export ``module(x)`` or ``module(x, noise)`` -> ``y`` with a dynamic batch axis (TorchScript exporter)."""
    import torch

    module = module.eval().cpu()
    x = torch.zeros(2, n_features)
    args: tuple = (x,) if not noise_dim else (x, torch.zeros(2, noise_dim))
    names = ["x"] if not noise_dim else ["x", "noise"]
    axes = {n: {0: "N"} for n in [*names, "y"]}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, args, buf, input_names=names, output_names=["y"], dynamic_axes=axes,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    return write_model_bytes(buf.getvalue(), path)


def write_model_bytes(data: bytes, path: str | Path) -> Path:
    import onnx

    model = onnx.load_from_string(data)
    # converters collect the opset imports in sets: order them so that the bytes do not depend on hash seeds
    imports = sorted(model.opset_import, key=lambda o: (o.domain, o.version))
    del model.opset_import[:]
    model.opset_import.extend(imports)
    onnx.checker.check_model(model)
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return path


# ---------------------------------------------------------------- LightGBM
def lightgbm_thresholds(booster) -> dict[int, np.ndarray]:
    """All split thresholds (float64, as LightGBM compares them) per feature index."""
    out: dict[int, list[float]] = {}

    def walk(node: dict) -> None:
        if "split_feature" in node:
            out.setdefault(int(node["split_feature"]), []).append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return {f: np.unique(np.asarray(v)) for f, v in out.items()}


def _node_thresholds(booster) -> dict[tuple[int, int], tuple[int, float]]:
    """(tree, ONNX node id) -> (feature, float64 threshold), numbering nodes as onnxmltools does: the root is 0,
    a split's two children get the next two ids when the split is visited, depth first, left before right."""
    out: dict[tuple[int, int], tuple[int, float]] = {}
    for t, tree in enumerate(booster.dump_model()["tree_info"]):
        counter = [1]

        def visit(node: dict, node_id: int, t: int = t, counter: list = counter) -> None:
            if "split_feature" not in node:
                return
            out[(t, node_id)] = (int(node["split_feature"]), float(node["threshold"]))
            left, right = counter[0], counter[0] + 1
            counter[0] += 2
            visit(node["left_child"], left)
            visit(node["right_child"], right)

        visit(tree["tree_structure"], 0)
    return out


def _round_down_f32(t: np.ndarray) -> np.ndarray:
    """Largest float32 <= t: for float32 inputs, ``x <= t`` (float64) iff ``x <= round_down(t)`` (float32)."""
    f = np.asarray(t, dtype=np.float64).astype(np.float32)
    return np.where(f.astype(np.float64) > t, np.nextafter(f, np.float32(-np.inf)), f)


def export_lightgbm(model, path: str | Path, n_features: int) -> Path:
    """LightGBM classifier -> ONNX ``x`` -> ``y`` probabilities [N, C] (ONNX default-domain opset 17).

    LightGBM compares float64 thresholds with the float32 inputs promoted to float64, while ONNX Runtime's
    TreeEnsemble compares in float32; each threshold is therefore replaced by the largest float32 not above it,
    which makes the two agree exactly, including on rows that sit on a threshold.
    """
    import onnx
    import onnxmltools
    from onnx import helper
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = model.booster_ if hasattr(model, "booster_") else model
    # a fixed graph name: the converter's default is a random UUID, which would make every export's bytes differ
    onx = onnxmltools.convert_lightgbm(model, name="lightgbm", zipmap=False,
                                       initial_types=[("x", FloatTensorType([None, n_features]))])
    by_node = _node_thresholds(booster)
    thresholds = lightgbm_thresholds(booster)
    for node in onx.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: a for a in node.attribute}
        modes = list(attrs["nodes_modes"].strings)
        feats = list(attrs["nodes_featureids"].ints)
        trees = list(attrs["nodes_treeids"].ints)
        ids = list(attrs["nodes_nodeids"].ints)
        vals = np.asarray(attrs["nodes_values"].floats, dtype=np.float32)
        for i, (m, f) in enumerate(zip(modes, feats, strict=True)):
            if m != b"BRANCH_LEQ":
                if m != b"LEAF":
                    raise ValueError(f"unsupported tree node mode {m!r}")
                continue
            exact = by_node.get((trees[i], ids[i]))
            if exact is not None and exact[0] == f and np.float32(exact[1]) == vals[i]:
                vals[i] = _round_down_f32(np.asarray(exact[1]))
                continue
            # the converter numbered this node differently: match by value (ambiguous only in rare ties)
            cand = thresholds.get(f, np.empty(0))
            match = cand[cand.astype(np.float32) == vals[i]]
            if len(match):
                vals[i] = np.unique(_round_down_f32(match)).min()
        del attrs["nodes_values"].floats[:]
        attrs["nodes_values"].floats.extend(vals.tolist())
    # one output "y" = probabilities (the integer label output is dropped)
    prob = next(o for o in onx.graph.output if o.name == "probabilities")
    n_classes = prob.type.tensor_type.shape.dim[1].dim_value or None
    del onx.graph.output[:]
    onx.graph.node.append(helper.make_node("Identity", ["probabilities"], ["y"], name="y_out"))
    onx.graph.output.extend([helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", n_classes])])
    for imp in onx.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max(imp.version, OPSET)
    return write_model_bytes(onx.SerializeToString(), path)


ZERO_THRESHOLD = 1.0000000180025095e-35  # LightGBM's kZeroThreshold


def threshold_rows(booster, x: np.ndarray, n: int = 2000, seed: int = 0) -> np.ndarray:
    """Rows of ``x`` with one feature set exactly to a split threshold (as float32, both roundings).

    LightGBM's predictor reads inputs with ``|x| <= 1e-35`` as 0 (its sparse-zero convention), which a tree graph
    does not; physical features never take such values, so splits placed at +-1e-35 (LightGBM's "zero"
    thresholds) are tested at 0, where both agree.
    """
    booster = booster.booster_ if hasattr(booster, "booster_") else booster
    rng = np.random.default_rng(seed)
    pairs = [(f, t) for f, ts in lightgbm_thresholds(booster).items() for t in ts]
    if not pairs:
        return np.empty((0, x.shape[1]), dtype=np.float32)
    pick = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
    base = np.asarray(x, dtype=np.float32)[rng.integers(0, len(x), size=2 * len(pick))].copy()
    for k, idx in enumerate(pick):
        f, t = pairs[idx]
        if abs(t) <= ZERO_THRESHOLD:  # LightGBM's split "at zero": it reads |x| <= 1e-35 as 0, so test 0 itself
            base[2 * k, f] = base[2 * k + 1, f] = 0.0
            continue
        base[2 * k, f] = np.float32(t)  # nearest float32 (may be just above the threshold)
        base[2 * k + 1, f] = _round_down_f32(np.asarray(t))  # the largest float32 on the left branch
    return base


# ---------------------------------------------------------------- onnxruntime
def session_options(threads: int, spin: bool = False):
    """CPU session options: ``threads`` intra-op threads (0: all cores). Idle pool threads do not spin unless
    ``spin``: on a shared node (batch jobs, other processes) spinning threads steal the cores they wait for."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.intra_op_num_threads = threads if threads > 0 else (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def ort_session(path: str | Path, threads: int = 1, providers: Sequence[str] | None = None):
    """An onnxruntime session of the model at ``path`` (CPU unless ``providers``), see :func:`session_options`."""
    import onnxruntime as ort

    providers = list(providers or ["CPUExecutionProvider"])
    return ort.InferenceSession(str(path), session_options(threads), providers=providers)


def onnx_predict(path_or_session, x: np.ndarray, noise: np.ndarray | None = None,
                 batch_size: int = 65536) -> np.ndarray:
    """Run an exported model with onnxruntime (CPU) on ``x`` (and ``noise``) in batches."""
    sess = ort_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    names = {i.name for i in sess.get_inputs()}
    out = []
    for i in range(0, len(x), batch_size):
        feed = {"x": np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)}
        if "noise" in names:
            if noise is None:
                raise ValueError("this model needs a noise input")
            feed["noise"] = np.ascontiguousarray(noise[i:i + batch_size], dtype=np.float32)
        out.append(sess.run(["y"], feed)[0])
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def parity_check(native: Callable[[np.ndarray, np.ndarray | None], np.ndarray], onnx_path: str | Path,
                 x: np.ndarray, noise: np.ndarray | None = None, *, atol: float = 1e-4, rtol: float = 1e-4,
                 name: str = "model") -> dict[str, Any]:
    """Compare native predictions with onnxruntime's on the same rows; GateError above the tolerance.

    A row deviates when ``|a - b| > atol + rtol * |a|``; NaN in both outputs counts as agreement. Returns the max
    absolute and relative deviation.
    """
    a = np.asarray(native(x, noise), dtype=np.float64).reshape(len(x), -1)
    b = onnx_predict(onnx_path, x, noise).astype(np.float64).reshape(len(x), -1)
    if a.shape != b.shape:
        raise GateError(f"{name}: parity: native output shape {a.shape} != onnx {b.shape}")
    both_nan = np.isnan(a) & np.isnan(b)  # NaN where a quantity does not exist (e.g. muon LLs) must agree
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    bad = ~(diff <= atol + rtol * np.abs(np.where(both_nan, 0.0, a)))
    res = {"rows": len(x), "max_abs_deviation": float(diff.max()) if diff.size else 0.0,
           "max_rel_deviation": float((diff / np.maximum(np.abs(np.where(both_nan, 0.0, a)), 1e-12)).max())
           if diff.size else 0.0,
           "atol": atol, "rtol": rtol, "n_failing": int(bad.any(axis=1).sum())}
    if res["n_failing"]:
        raise GateError(f"{name}: parity native vs onnxruntime failed: max_abs_deviation = "
                        f"{res['max_abs_deviation']:.3g} on {res['n_failing']} of {len(x)} rows "
                        f"(tolerance atol {atol} + rtol {rtol})")
    return res


# ---------------------------------------------------------------- model card
def model_card(name: str, *, family: str, inputs: list[dict], outputs: list[dict], onnx_path: str | Path,
               training_files: Sequence[str | Path], params: dict, metrics: dict | None = None,
               parity: dict | None = None, noise_dim: int = 0, extra: dict | None = None) -> dict:
    """The JSON model card: what goes in and out (names, units), where it came from, how good it is."""
    card = {
        "name": name,
        "family": family,
        "format": "onnx",
        "onnx": str(onnx_path),
        "onnx_sha256": file_sha256(onnx_path),
        "opset": OPSET,
        "inputs": inputs,
        "outputs": outputs,
        "noise": {"name": "noise", "dim": noise_dim, "distribution": "standard normal"} if noise_dim else None,
        "training_data": {"files": [str(p) for p in training_files], "sha256": file_sha256(training_files)},
        "params": params,
        "metrics": metrics or {},
        "parity": parity or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
    }
    card.update(extra or {})
    return card


def write_card(path: str | Path, card: dict) -> Path:
    write_json(path, card)
    return Path(path)


def read_card(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
