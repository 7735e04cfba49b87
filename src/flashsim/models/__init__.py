"""Model registry: ``params.yaml`` ``models:`` entries -> :class:`ModelSpec` -> family instance.

An entry is ``NAME: {family: F, sample: S, <hyperparameters>, gates: {demo: {...}, full: {...}}}``; the family
``F`` is a key of :data:`FAMILIES`, the one table of model families: the module whose ``Family`` class implements
the model-specific part (see :mod:`flashsim.models.base`) and how the family trains, which selects the workflow's
rules. :func:`expand` is the one expansion of the entries: ``species: [a, b]`` gives models ``NAME_a``, ``NAME_b``
(``{species}`` in string values replaced, ``per_species`` overrides merged), and feature-set names in
``features`` become their columns (params.yaml ``feature_sets``). Family defaults are filled from the schema
when params.yaml is loaded.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from flashsim.config import load_params, merge, repo_root, resolve_scale
from flashsim.errors import ConfigError

TRAINS = ("torch", "cpu", "assemble")


class FamilyEntry(NamedTuple):
    """One row of :data:`FAMILIES`: the module defining the ``Family`` class, and how the family trains.

    ``trains`` selects the workflow's training rule (rules/models.smk): ``torch`` (``train_torch``, the only rule
    that may ask for a GPU), ``cpu`` (``fit_cpu``, e.g. LightGBM) or ``assemble`` (``assemble``: built from the
    trained outputs of the models named in the entry's ``stages``). Plain strings, so the Snakefile reads this
    table without importing torch or any family module. ``metrics``: the kinds of validation metrics its models
    write (keys of :data:`flashsim.validation.gates.METRICS`): a gate on any other metric is a configuration
    error at load. ``detector``: the family's models bake the configured detector geometry (params.yaml
    ``detector``) into their graphs, so a geometry change reruns their jobs."""

    module: str
    trains: str
    metrics: tuple[str, ...]
    detector: bool = False


# family name (params.yaml `family:`) -> its module and how it trains; adding a family is one line here.
FAMILIES: dict[str, FamilyEntry] = {
    "lgbm_classifier": FamilyEntry("flashsim.models.lgbm_classifier", "cpu", ("classifier",)),
    "mlp_classifier": FamilyEntry("flashsim.models.mlp_classifier", "torch", ("classifier",)),
    "generator": FamilyEntry("flashsim.models.generator", "torch", ("generator",)),
    "covariance": FamilyEntry("flashsim.models.covariance", "torch", ("generator",)),
    "ghost_mlp": FamilyEntry("flashsim.models.ghost_mlp", "torch", ("classifier",)),
    "pid_ismuon": FamilyEntry("flashsim.models.pid.ismuon", "torch", ("classifier", "pid")),
    "pid_generator": FamilyEntry("flashsim.models.pid.generator", "torch", ("generator", "pid")),
    "pid_pipeline": FamilyEntry("flashsim.models.pid.pipeline", "assemble", ("generator", "pid", "pid_pipeline")),
    "ecal_gnn": FamilyEntry("flashsim.models.ecal.gnn", "torch", ("ecal",), detector=True),
    "ecal_transformer": FamilyEntry("flashsim.models.ecal.transformer", "torch", ("ecal",), detector=True),
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


def resolve_features(value: str | list[str], feature_sets: dict[str, list[str]], where: str) -> list[str]:
    """A ``features`` value with feature-set names (params.yaml ``feature_sets``) replaced by their columns.

    ``value`` is a set name or a list of column and set names; sets may name other sets."""
    out: list[str] = []

    def add(item: str, seen: tuple[str, ...]) -> None:
        if item not in feature_sets:
            out.append(item)
            return
        if item in seen:
            raise ConfigError(f"params.yaml: feature_sets: {' -> '.join((*seen, item))} is a cycle")
        for col in feature_sets[item]:
            add(col, (*seen, item))

    if isinstance(value, str) and value not in feature_sets:
        raise ConfigError(f"params.yaml: {where}: {value!r} is not a feature set; feature_sets: "
                          f"{', '.join(sorted(feature_sets)) or 'none'}")
    for item in [value] if isinstance(value, str) else value:
        add(item, ())
    return out


def expand(models: dict[str, dict], feature_sets: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """The model entries by model name: ``species`` lists expanded into one entry per species (``{species}`` in
    string values replaced, ``per_species[<species>]`` merged over the entry), feature-set names in ``features``
    resolved. The one expansion, used by the Snakefile, :func:`get_spec` and the tests."""
    out: dict[str, dict] = {}
    for name, entry in (models or {}).items():
        entry = dict(entry)
        per_species = entry.pop("per_species", None) or {}
        species = entry.get("species")
        if isinstance(species, list):
            unknown = sorted(set(per_species) - set(species))
            if unknown:
                raise ConfigError(f"params.yaml: models/{name}/per_species: {unknown} not in species {species}")
            for sp in species:
                out[f"{name}_{sp}"] = merge({**_substitute(entry, sp), "species": sp},
                                            _substitute(per_species.get(sp, {}), sp))
        elif per_species:
            raise ConfigError(f"params.yaml: models/{name}/per_species needs a species list")
        else:
            out[name] = entry
    for name, entry in out.items():
        if "features" in entry:
            entry["features"] = resolve_features(entry["features"], feature_sets or {}, f"models/{name}/features")
        check_gates(name, entry)
    return out


def check_gates(name: str, entry: dict) -> None:
    """A gate on a metric that the entry cannot produce is a ConfigError now, before any job runs: a metric its
    family's validation never writes (:data:`FAMILIES` ``metrics``, e.g. a misspelt name), and metrics of a truth
    oracle (``logloss_gap``, ``auc_gap``, ``oracle.*``, ``truth.*``) without ``oracle:``, which real data never
    has (the default held-out-label gates are in :data:`flashsim.validation.default.CLASSIFIER_METRICS`)."""
    from flashsim.validation.gates import METRICS, known_metric, needs_truth

    family = FAMILIES.get(entry.get("family", ""))

    gates = entry.get("gates") or {}
    sets = gates.items() if isinstance(gates, dict) and set(gates) <= {"demo", "full"} else [("", gates)]
    for scale, gateset in sets:
        for metric in gateset or {}:
            where = f"models/{name}/gates{'/' + scale if scale else ''}/{metric}"
            if needs_truth(metric) and not entry.get("oracle"):
                raise ConfigError(f"params.yaml: {where}: '{metric}' needs a truth oracle (oracle: NAME), which "
                                  "this model does not set (real data has none): gate held-out metrics instead "
                                  "(calibration.chi2_ndf, log_loss_skill, brier_skill, auc) or remove this gate")
            if family is not None and not known_metric(metric, family.metrics):
                names = ", ".join(p for kind in (*family.metrics, "common") for p in METRICS[kind])
                raise ConfigError(f"params.yaml: {where}: family {entry['family']} never writes a metric "
                                  f"'{metric}'; its metrics: {names}")


def expand_params(params: dict, root: Path | None = None) -> dict[str, dict]:
    """:func:`expand` of a whole params dict's ``models`` (with its ``feature_sets``), reviewed tuned overrides
    (``tuned/NAME.yaml`` of the repository, :mod:`flashsim.tuned`) merged over their models' entries."""
    from flashsim.tuned import apply_overrides

    return apply_overrides(expand(params.get("models") or {}, params.get("feature_sets") or {}),
                           root if root is not None else repo_root())


def by_training(models: dict[str, dict]) -> dict[str, list[str]]:
    """Expanded model names grouped by how their family trains (:data:`FAMILIES` ``trains``; every kind present)."""
    out: dict[str, list[str]] = {kind: [] for kind in TRAINS}
    for name, entry in models.items():
        if entry.get("family") not in FAMILIES:
            raise ConfigError(f"params.yaml: models/{name}/family: unknown family {entry.get('family')!r}; "
                              f"known families: {', '.join(sorted(FAMILIES))}")
        out[FAMILIES[entry["family"]].trains].append(name)
    return out


VALIDATION_ONLY = frozenset({"gates", "validation_rows", "bins", "parity", "oracle", "cuts", "p_edges"})


def stage_params(entry: dict, stage: str, seed: int, scale: str, detector: dict | None = None) -> str:
    """The keys of an expanded model entry that matter to ``stage`` (train, export, validate), with the seed and
    scale, as canonical JSON: the workflow's params rerun trigger (``model_params`` in rules/common.smk), so a
    change reruns exactly the jobs of the model whose entry changed. Training ignores validation-only keys; export
    also reads ``parity``. ``detector``: the configured geometry, for families whose graphs bake it in."""
    entry = {k: v for k, v in entry.items() if k != "tune"}  # the search space never reruns the model's jobs
    if stage == "train":
        entry = {k: v for k, v in entry.items() if k not in VALIDATION_ONLY}
    elif stage == "export":
        entry = {k: v for k, v in entry.items() if k not in VALIDATION_ONLY - {"parity"}}
    elif stage != "validate":
        raise ValueError(f"unknown stage {stage!r}")
    out = {"model": entry, "seed": seed, "scale": scale}
    if FAMILIES.get(entry.get("family", ""), FamilyEntry("", "", ())).detector:
        out["detector"] = detector
    return json.dumps(out, sort_keys=True)


def model_names(params: dict | None = None) -> list[str]:
    params = params if params is not None else load_params()
    return list(expand_params(params))


def get_spec(name: str, params: dict | None = None, root: Path | None = None) -> ModelSpec:
    """The resolved spec of model ``name``; ConfigError when unknown."""
    params = params if params is not None else load_params()
    models = expand_params(params, root)
    if name not in models:
        raise ConfigError(f"unknown model {name!r}; params.yaml models: {', '.join(sorted(models)) or 'none'}")
    scale = params["scale"]
    entry = dict(models[name])
    entry.pop("tune", None)  # flashsim.tune reads it
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
    return importlib.import_module(FAMILIES[family].module).Family


def get_family(spec_or_name: ModelSpec | str, params: dict | None = None):
    """Instantiate the family of a model (validates its hyperparameters)."""
    spec = spec_or_name if isinstance(spec_or_name, ModelSpec) else get_spec(spec_or_name, params)
    return family_class(spec.family)(spec)
