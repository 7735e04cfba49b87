"""Model registry: ``params.yaml`` ``models:`` entries -> :class:`ModelSpec` -> family instance.

An entry is ``NAME: {family: F, sample: S, <hyperparameters>, gates: {demo: {...}, full: {...}}}``; the family
``F`` is a key of :data:`FAMILIES`, the one table of model families, naming the module whose ``Family`` class
implements the model-specific part (see :mod:`flashsim.models.base`). An entry with ``species: [a, b]``
expands to models ``NAME_a``, ``NAME_b``, each
with ``species`` set to one value and ``{species}`` in string values (e.g. the sample) replaced by it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashsim.config import load_params, repo_root, resolve_scale
from flashsim.errors import ConfigError

# family name (params.yaml `family:`) -> module defining its ``Family`` class; adding a family is one line here.
FAMILIES: dict[str, str] = {
    "lgbm_classifier": "flashsim.models.lgbm_classifier",
    "mlp_classifier": "flashsim.models.mlp_classifier",
    "generator": "flashsim.models.generator",
    "covariance": "flashsim.models.covariance",
    "ghost_mlp": "flashsim.models.ghost_mlp",
    "pid_ismuon": "flashsim.models.pid.ismuon",
    "pid_generator": "flashsim.models.pid.generator",
    "pid_pipeline": "flashsim.models.pid.pipeline",
    "ecal_gnn": "flashsim.models.ecal.gnn",
    "ecal_transformer": "flashsim.models.ecal.transformer",
}


@dataclass
class ModelSpec:
    """Everything a job needs to know about one model, with values resolved for the configured scale."""

    name: str
    family: str
    sample: str
    cfg: dict[str, Any]
    gates: dict[str, dict]
    scale: str
    seed: int
    root: Path = field(default_factory=repo_root)
    params: dict[str, Any] = field(default_factory=dict)  # the whole params.yaml (resolved), for cross refs

    @property
    def train_dir(self) -> Path:
        return self.root / "results" / "train" / self.name

    @property
    def onnx_path(self) -> Path:
        return self.root / "models" / f"{self.name}.onnx"

    @property
    def card_path(self) -> Path:
        return self.root / "models" / f"{self.name}.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "reports" / self.name

    def prepared(self, split: str) -> Path:
        return self.root / "results" / "prepared" / self.sample / f"{split}.parquet"


def _substitute(value: Any, species: str) -> Any:
    if isinstance(value, str):
        return value.replace("{species}", species)
    if isinstance(value, dict):
        return {k: _substitute(v, species) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, species) for v in value]
    return value


def expand(models: dict[str, dict]) -> dict[str, dict]:
    """Expand ``species`` lists into one entry per species."""
    out: dict[str, dict] = {}
    for name, entry in (models or {}).items():
        species = entry.get("species")
        if isinstance(species, list):
            for sp in species:
                out[f"{name}_{sp}"] = {**_substitute(entry, sp), "species": sp}
        else:
            out[name] = entry
    return out


def model_names(params: dict | None = None) -> list[str]:
    params = params if params is not None else load_params()
    return list(expand(params.get("models", {})))


def get_spec(name: str, params: dict | None = None, root: Path | None = None) -> ModelSpec:
    """The resolved spec of model ``name``; ConfigError when unknown."""
    params = params if params is not None else load_params()
    models = expand(params.get("models", {}))
    if name not in models:
        raise ConfigError(f"unknown model {name!r}; params.yaml models: {', '.join(sorted(models)) or 'none'}")
    scale = params["scale"]
    entry = dict(models[name])
    gates = entry.pop("gates", {}) or {}
    gates = gates.get(scale, {}) if isinstance(gates, dict) and set(gates) <= {"demo", "full"} else gates
    cfg = resolve_scale(entry, scale)
    return ModelSpec(name=name, family=cfg.pop("family"), sample=cfg.pop("sample"), cfg=cfg,
                     gates=resolve_scale(gates, scale), scale=scale, seed=int(params["seed"]),
                     root=Path(root) if root else repo_root(), params=resolve_scale(params, scale))


def family_class(family: str):
    """The ``Family`` class registered for ``family`` in :data:`FAMILIES`; ConfigError naming the known ones."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; known families: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[family]).Family


def get_family(spec_or_name: ModelSpec | str, params: dict | None = None):
    """Instantiate the family of a model (validates its hyperparameters)."""
    spec = spec_or_name if isinstance(spec_or_name, ModelSpec) else get_spec(spec_or_name, params)
    return family_class(spec.family)(spec)
