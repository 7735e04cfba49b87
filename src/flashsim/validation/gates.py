"""Gates: thresholds on validation metrics from ``params.yaml`` (``models.<name>.gates.{demo,full}``)."""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

from flashsim.errors import ConfigError, GateError

ORACLE_METRICS = ("oracle.", "truth.", "logloss_gap", "auc_gap")
"""Metric names (or prefixes, ending in '.') that need the reference simulation's truth (``oracle:``); the
default gates use only held-out labels (:data:`flashsim.validation.default.CLASSIFIER_METRICS`)."""


def needs_truth(metric: str) -> bool:
    """True for a metric only a truth oracle can give (see :data:`ORACLE_METRICS`)."""
    return any(metric.startswith(m) if m.endswith(".") else metric == m for m in ORACLE_METRICS)


METRICS: dict[str, tuple[str, ...]] = {
    "classifier": ("auc", "log_loss", "log_loss.baseline", "log_loss_skill", "brier", "brier.baseline",
                   "brier_skill", "calibration.*", "oracle.*", "logloss_gap", "auc_gap"),
    "generator": ("two_sample_auc", "ks_max", "ks.*", "wasserstein_max", "wasserstein.*", "binned.*", "truth.*",
                  "teacher.*", "few_step_*"),
    "pid": ("pid_eff.*",),
    "pid_pipeline": ("muon_nan_convention_violations",),
    "ecal": ("two_sample_auc", "multiplicity.*", "unmatched.*", "residual.*", "residual_w.*", "energy_scale.*",
             "energy_resolution.*", "events", "photons"),
    "common": ("rows", "validate_seconds"),
}
"""Metric names (glob patterns) that each kind of validation writes to ``reports/NAME/metrics.json``; a family
gives the kinds of its models (:data:`flashsim.models.FAMILIES` ``metrics``). A gate on any other name can never be
met, so it is a configuration error when params.yaml loads."""


def known_metric(metric: str, kinds: tuple[str, ...]) -> bool:
    """True when validation of the given kinds (keys of :data:`METRICS`) writes ``metric``."""
    return any(fnmatchcase(metric, pattern) for kind in (*kinds, "common") for pattern in METRICS[kind])


def evaluate_gates(metrics: dict[str, float], gates: dict[str, dict]) -> list[dict]:
    """One result row per gate: ``{metric, value, max|min, passed}``.

    ``gates`` maps a metric name (as in metrics.json, e.g. ``two_sample_auc``, ``calibration.chi2_ndf``) to
    ``{max: x}`` and/or ``{min: y}``. A metric that is missing or NaN fails its gate.
    """
    rows = []
    for name, bound in (gates or {}).items():
        if not isinstance(bound, dict) or not set(bound) <= {"max", "min"} or not bound:
            raise ConfigError(f"gate {name!r}: expected {{max: x}} and/or {{min: y}}, got {bound!r}")
        value = metrics.get(name)
        ok = value is not None and not (isinstance(value, float) and math.isnan(value))
        if ok and "max" in bound:
            ok = value <= bound["max"]
        if ok and "min" in bound:
            ok = value >= bound["min"]
        rows.append({"metric": name, "value": value, **bound, "passed": bool(ok)})
    return rows


def enforce(model: str, rows: list[dict]) -> None:
    """Raise GateError naming every failing metric."""
    failed = [r for r in rows if not r["passed"]]
    if failed:
        parts = []
        for r in failed:
            v = "missing" if r["value"] is None else f"{r['value']:.4g}"
            lim = " and ".join(f"{k} {r[k]}" for k in ("min", "max") if k in r)
            parts.append(f"{r['metric']} = {v} (gate: {lim})")
        raise GateError(f"{model}: validation gate failed: " + "; ".join(parts))
