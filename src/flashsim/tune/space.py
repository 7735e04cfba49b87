"""The ``tune:`` block of a model entry: search space, budget, sampler, pruner, objective.

The block's own keys are checked by schemas/params.schema.yaml (``$defs/tune``) when params.yaml is loaded; this
module checks what only the family knows: every searched or fixed hyperparameter must be a key of the family's
schema, and every value a distribution can produce must be valid there (bounds, types, enums). Errors name the key
(``params.yaml: models/NAME/tune/params/lr: ...``) and are raised before any trial runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flashsim.errors import ConfigError

# objective metric and direction by family task (the metrics the gates judge, validation split)
DEFAULT_OBJECTIVE = {"generator": ("two_sample_auc", "minimize"), "classifier": ("log_loss", "minimize")}
MAXIMIZE_HINTS = ("auc_gap",)  # none of the gate metrics is maximised by default; `direction` overrides
DEFAULT_INTERMEDIATE = "val_loss"


@dataclass
class Distribution:
    """One searched hyperparameter: ``float``/``int`` (``low``, ``high``, ``log``, ``step``) or ``categorical``."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_categorical(self.name, self.choices)

    def corners(self) -> list[Any]:
        """Values the distribution can take at its edges (checked against the family's schema)."""
        if self.kind == "categorical":
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


@dataclass
class TuneConfig:
    """A resolved ``tune:`` block of one (expanded) model."""

    model: str
    task: str
    space: dict[str, Distribution]
    fixed: dict[str, Any]
    n_trials: int | None
    timeout: float | None
    objective: str
    direction: str
    intermediate: str
    cost: str | None
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    workers: int
    enqueue_default: bool

    @property
    def directions(self) -> list[str]:
        return [self.direction, "minimize"] if self.cost else [self.direction]

    @property
    def metric_names(self) -> list[str]:
        return [self.objective, f"cost.{self.cost}"] if self.cost else [self.objective]


def _where(model: str, *keys: str) -> str:
    return "params.yaml: models/" + "/".join((model, "tune", *keys))


def parse_distribution(model: str, name: str, spec: Any) -> Distribution:
    """A distribution from ``{type: float|int|categorical, ...}``; ConfigError naming the key when invalid."""
    where = _where(model, "params", name)
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: expected a mapping with `type` (float, int or categorical), got {spec!r}")
    kind = spec["type"]
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise ConfigError(f"{where}/type: {kind!r} is not one of float, int, categorical")
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for a {kind} distribution "
                          f"(allowed: {sorted(allowed[kind])})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}/choices: a non-empty list is required")
        return Distribution(name, kind, choices=choices)
    for key in ("low", "high"):
        if not isinstance(spec.get(key), (int, float)) or isinstance(spec.get(key), bool):
            raise ConfigError(f"{where}/{key}: a number is required")
        if kind == "int" and int(spec[key]) != spec[key]:
            raise ConfigError(f"{where}/{key}: an integer is required for an int distribution")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: log needs low > 0 (got {low})")
    if log and step is not None and kind == "float":
        raise ConfigError(f"{where}: step and log cannot be combined")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{where}/step: a positive number is required")
    return Distribution(name, kind, low, high, log, step)


def family_schema(family_cls: Any) -> dict[str, Any]:
    """The JSON schema of a family's hyperparameters (common keys included), as the family validates them."""
    from flashsim.models import base

    return {**base.COMMON_SCHEMA, **family_cls.SCHEMA}


UNTUNABLE = frozenset({"features", "label", "classes", "class_names", "targets", "species", "derive", "selection",
                       "weight", "units", "oracle", "bins", "parity", "device", "threads"})


def check_against_family(model: str, family_cls: Any, cfg: dict, values: dict[str, list[Any]], key: str) -> None:
    """Every value in ``values`` (name -> candidate values) must be a valid family hyperparameter."""
    from flashsim.config import default_filling_validator

    props = family_schema(family_cls)
    for name, candidates in values.items():
        where = _where(model, key, name)
        if name not in props:
            known = sorted(k for k in props if k not in UNTUNABLE)
            raise ConfigError(f"{where}: {name!r} is not a hyperparameter of family {family_cls.__module__}; "
                              f"known: {', '.join(known)}")
        if name in UNTUNABLE and key == "params":
            raise ConfigError(f"{where}: {name!r} describes the data, not the model: it cannot be searched")
        for value in candidates:
            errors = list(default_filling_validator()(props[name]).iter_errors(json.loads(json.dumps(value))))
            if errors:
                raise ConfigError(f"{where}: value {value!r} is invalid for the family: {errors[0].message}")


def load_tune(name: str, params: dict | None = None) -> TuneConfig:
    """The ``tune:`` block of model ``name`` (expanded name), checked against the family; ConfigError if absent."""
    from flashsim.config import load_params, resolve_scale
    from flashsim.models import FAMILIES, expand_params, family_class

    params = params if params is not None else load_params()
    models = expand_params(params)
    if name not in models:
        raise ConfigError(f"unknown model {name!r}; params.yaml models: {', '.join(sorted(models)) or 'none'}")
    entry = models[name]
    block = resolve_scale(entry.get("tune"), params["scale"])
    if not block:
        raise ConfigError(f"params.yaml: models/{name}/tune: no tune block (see docs/tuning.md)")
    family = entry["family"]
    if FAMILIES[family].trains == "assemble":
        raise ConfigError(f"{_where(name)}: family {family} is assembled from trained stages: tune its stages "
                          f"({', '.join(sorted(map(str, (entry.get('stages') or {}).values())))})")
    cls = family_class(family)
    task = cls.task
    space = {k: parse_distribution(name, k, v) for k, v in (block.get("params") or {}).items()}
    if not space:
        raise ConfigError(f"{_where(name, 'params')}: the search space is empty")
    fixed = dict(block.get("fixed") or {})
    both = sorted(set(space) & set(fixed))
    if both:
        raise ConfigError(f"{_where(name, 'fixed')}: {both} are both searched and fixed")
    cfg = resolve_scale(entry, params["scale"])
    check_against_family(name, cls, cfg, {k: d.corners() for k, d in space.items()}, "params")
    check_against_family(name, cls, cfg, {k: [v] for k, v in fixed.items()}, "fixed")
    default_metric, default_dir = DEFAULT_OBJECTIVE.get(task, ("two_sample_auc", "minimize"))
    objective = block.get("objective", default_metric)
    wrong_task = {"classifier": ("two_sample_auc",), "generator": ("log_loss", "logloss_gap", "auc")}
    if objective in wrong_task.get(task, ()):
        raise ConfigError(f"{_where(name, 'objective')}: {objective!r} is not a metric of a {task} family")
    direction = block.get("direction", "maximize" if objective in MAXIMIZE_HINTS else default_dir)
    if block.get("n_trials") is None and block.get("timeout") is None:
        raise ConfigError(f"{_where(name)}: give n_trials or timeout (a time budget in seconds)")
    return TuneConfig(model=name, task=task, space=space, fixed=fixed, n_trials=block.get("n_trials"),
                      timeout=block.get("timeout"), objective=objective, direction=direction,
                      intermediate=block.get("intermediate", DEFAULT_INTERMEDIATE), cost=block.get("cost"),
                      sampler=dict(block.get("sampler") or {}), pruner=dict(block.get("pruner") or {}),
                      workers=int(block.get("workers", 1)), enqueue_default=bool(block.get("enqueue_default", True)))


def default_values(tc: TuneConfig, cfg: dict) -> dict[str, Any]:
    """The entry's current values of the searched hyperparameters, where they lie inside the space (the baseline
    trial); values outside the space are left out (the sampler then draws them)."""
    out = {}
    for k, d in tc.space.items():
        v = cfg.get(k)
        if v is None:
            continue
        inside = v in d.choices if d.kind == "categorical" else d.low <= v <= d.high
        if inside:
            out[k] = v
    return out


def make_sampler(tc: TuneConfig, seed: int | None) -> Any:
    """The configured sampler (TPE with ``constant_liar`` by default: parallel workers do not pile on one point)."""
    import optuna

    s = dict(tc.sampler)
    name = s.pop("name", "tpe")
    seed = s.pop("seed", seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=s.pop("constant_liar", True),
                                          n_startup_trials=s.pop("n_startup_trials", 5),
                                          multivariate=s.pop("multivariate", True), **s)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **s)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **s)
    raise ConfigError(f"{_where(tc.model, 'sampler', 'name')}: unknown sampler {name!r}")


def make_pruner(tc: TuneConfig) -> Any:
    """The configured pruner: ``median`` (default), ``hyperband``, ``threshold`` or ``none``."""
    import optuna

    p = dict(tc.pruner)
    name = p.pop("name", "median")
    if tc.cost:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 3),
                                           n_warmup_steps=p.get("n_warmup_steps", 1))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.get("min_resource", 1),
                                              max_resource=p.get("max_resource", "auto"),
                                              reduction_factor=p.get("reduction_factor", 3))
    if name == "threshold":
        return optuna.pruners.ThresholdPruner(upper=p.get("upper"), lower=p.get("lower"),
                                              n_warmup_steps=p.get("n_warmup_steps", 0))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"{_where(tc.model, 'pruner', 'name')}: unknown pruner {name!r}")
