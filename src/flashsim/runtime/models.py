"""Find a model's ONNX file and card: in a directory (``models/``) or in the MLflow registry by alias.

A source is either a directory holding ``<name>.onnx`` + ``<name>.json``, or an MLflow models URI template such
as ``models:/{name}@validated`` (downloaded with ``mlflow.artifacts.download_artifacts`` into a cache folder).
The card lists the ONNX input ``x``'s feature names (and units), the width of ``noise`` for generative models and
the output names of ``y`` (see ``docs/runtime.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from flashsim.errors import ConfigError, InputError


@dataclass
class ModelRef:
    """A resolved model: its ONNX graph on disk, card and the IO it exposes."""

    name: str
    onnx: Path
    card: dict
    features: list[str]
    outputs: list[str]
    noise: int = 0
    units: dict[str, str] = field(default_factory=dict)
    origin: str = ""
    version: str = ""  # registry version (MLflow models), "" for files

    @property
    def n_in(self) -> int:
        return len(self.features)


def _names(entries) -> tuple[list[str], dict[str, str]]:
    """Names (and units) from a card section: a list of names, of {name, unit} dicts, or a {name: unit} dict."""
    names, units = [], {}
    if isinstance(entries, dict):
        for k, v in entries.items():
            names.append(str(k))
            if isinstance(v, str):
                units[str(k)] = v
            elif isinstance(v, dict) and "unit" in v:
                units[str(k)] = str(v["unit"])
        return names, units
    for e in entries or []:
        if isinstance(e, dict):
            names.append(str(e["name"]))
            if "unit" in e:
                units[str(e["name"])] = str(e["unit"])
        else:
            names.append(str(e))
    return names, units


def _tensor_section(section, tensor: str):
    """The column list of ONNX tensor ``tensor`` in a card section. Accepted forms: the model cards of
    ``flashsim export`` (``[{"name": "x", "columns": [{"name", "unit"}, ...]}, {"name": "noise", ...}]``),
    ``{"x": [...]}``, or directly the list / mapping of column names."""
    if isinstance(section, dict) and tensor in section:
        return section[tensor]
    if isinstance(section, list) and any(isinstance(e, dict) and "columns" in e for e in section):
        return next((e["columns"] for e in section if e.get("name") == tensor), [])
    return section


def _graph_io(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def width(v) -> int:
        d = v.type.tensor_type.shape.dim
        return int(d[-1].dim_value) if len(d) >= 2 and d[-1].dim_value else -1

    return ({v.name: width(v) for v in m.graph.input if v.name not in inits},
            {v.name: width(v) for v in m.graph.output})


def parse_card(name: str, onnx_path: Path, card: dict, origin: str = "") -> ModelRef:
    """Read feature / noise / output names from a model card and check them against the ONNX graph."""
    ins, outs = _graph_io(onnx_path)
    if "x" not in ins or "y" not in outs:
        raise InputError(f"model '{name}': ONNX inputs {sorted(ins)} / outputs {sorted(outs)} do not follow the "
                         "convention (input x [N, F], optional noise [N, Z], output y)", file=str(onnx_path))
    noise = ins.get("noise", 0)
    features, units = _names(_tensor_section(card.get("inputs", card.get("features")), "x"))
    features = [f for f in features if f != "noise" and not f.startswith("noise_")]
    outputs, out_units = _names(_tensor_section(card.get("outputs", card.get("targets")), "y"))
    units.update(out_units)
    if not features or len(features) != ins["x"]:
        raise InputError(f"model '{name}': card lists {len(features)} input features, ONNX input x has {ins['x']}",
                         file=str(onnx_path))
    if outputs and outs["y"] > 0 and len(outputs) != outs["y"]:
        raise InputError(f"model '{name}': card lists {len(outputs)} outputs, ONNX output y has {outs['y']}",
                         file=str(onnx_path))
    if not outputs:
        outputs = [f"y{i}" for i in range(max(outs["y"], 0))]
    return ModelRef(name, onnx_path, card, features, outputs, max(noise, 0), units, origin)


def resolve(name: str, source: str | Path = "models", cache: str | Path = "results/runtime/registry") -> ModelRef:
    """Resolve ``name`` in ``source`` (a directory, or an MLflow URI template with ``{name}``)."""
    src = str(source)
    if src.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        return _from_mlflow(name, src.format(name=name), Path(cache))
    onnx_path, card_path = Path(src) / f"{name}.onnx", Path(src) / f"{name}.json"
    if not onnx_path.exists():
        raise FileNotFoundError(onnx_path)
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return parse_card(name, onnx_path, card, origin=str(onnx_path))


def _from_mlflow(name: str, uri: str, cache: Path) -> ModelRef:
    """Download a registered version (``models:/NAME@ALIAS``) from the project's MLflow store (the server of
    ``MLFLOW_TRACKING_URI``, else the local store); a missing model or alias is ``FileNotFoundError`` (stage
    skipped), anything else a ConfigError."""
    import shutil

    import mlflow
    from mlflow.exceptions import MlflowException

    from flashsim.mlops.model_registry import registry_store

    store = registry_store()
    dst = cache / name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                         tracking_uri=store.uri))
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", "")) or "not found" in str(err).lower():
            raise FileNotFoundError(uri) from err
        raise ConfigError(f"cannot download {uri} from the MLflow registry {store.uri}: {err}") from err
    except Exception as err:
        raise ConfigError(f"cannot download {uri} from the MLflow registry {store.uri}: {err}") from err
    onnxs = sorted(local.rglob("*.onnx"))
    pick = [p for p in onnxs if p.stem == name] or onnxs
    if not pick:
        raise InputError(f"{uri}: no .onnx file among the downloaded artifacts", file=str(local))
    cards = [p for p in local.rglob("*.json") if p.stem in (name, "card", "model_card")]
    card = json.loads(cards[0].read_text()) if cards else {}
    ref = parse_card(name, pick[0], card, origin=uri)
    ref.version = _registry_version(uri, store.uri)
    return ref


def _registry_version(uri: str, tracking_uri: str) -> str:
    """The version number behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` ("" otherwise)."""
    if not uri.startswith("models:/"):
        return ""
    body = uri[len("models:/"):]
    if "@" in body:
        from mlflow import MlflowClient

        name, alias = body.split("@", 1)
        try:
            return str(MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
                       .get_model_version_by_alias(name, alias).version)
        except Exception:  # the download worked: a missing version number is not worth failing for
            return ""
    parts = body.split("/")
    return parts[1] if len(parts) > 1 and parts[1].isdigit() else ""


def available(names: list[str], source: str | Path) -> dict[str, ModelRef]:
    """The subset of ``names`` that resolve in ``source`` (missing local models are skipped)."""
    out = {}
    for n in names:
        try:
            out[n] = resolve(n, source)
        except FileNotFoundError:
            continue
    return out
