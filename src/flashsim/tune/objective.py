"""One trial: train the model with a trial's hyperparameters through the family's public API, export it, and
measure what the gates judge on the VALIDATION split (never the test split).

The family trains with a :class:`TrialReporter` as its run: every ``log_metrics(metrics, step)`` of the training
loop (one per epoch, or per boosting iteration) reaches the trial's MLflow run, and the ``intermediate`` metric is
reported to Optuna, whose pruner may stop the trial there (:class:`Pruned`). Trial outputs (checkpoints, the ONNX
graph, the validation plots) live in ``results/tune/NAME/trials/NUMBER/``, never in the model's own directories.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flashsim.models import ModelSpec, family_class


class Pruned(Exception):
    """Raised from the training loop when the pruner stops the trial (the worker turns it into TrialPruned)."""


@dataclasses.dataclass
class TrialSpec(ModelSpec):
    """A model spec whose outputs (training dir, ONNX, card, report) live in the trial's directory."""

    trial_dir: Path = Path("trial")

    @property
    def train_dir(self) -> Path:  # type: ignore[override]
        return self.trial_dir

    @property
    def onnx_path(self) -> Path:  # type: ignore[override]
        return self.trial_dir / "model.onnx"

    @property
    def card_path(self) -> Path:  # type: ignore[override]
        return self.trial_dir / "model.json"

    @property
    def report_dir(self) -> Path:  # type: ignore[override]
        return self.trial_dir / "validation"


class TrialReporter:
    """The run a family trains with during a trial: forwards metrics to ``run`` (the trial's MLflow run) and the
    ``intermediate`` metric to ``report(value, step) -> prune?``."""

    def __init__(self, run: Any, intermediate: str, report: Callable[[float, int], bool] | None) -> None:
        self.run, self.intermediate, self.report = run, intermediate, report
        self.steps = 0

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
        self.run.log_metrics(metrics, step=step, prefix=prefix)
        value = metrics.get(self.intermediate)
        if self.report is not None and value is not None and not prefix:
            self.steps += 1
            if self.report(float(value), int(step if step is not None else self.steps)):
                raise Pruned(f"pruned at step {step}")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.run.set_tags(tags)

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        self.run.log_params(params, prefix)


def trial_spec(spec: ModelSpec, values: Mapping[str, Any], trial_dir: Path) -> TrialSpec:
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(ModelSpec)}
    fields["cfg"] = {**spec.cfg, **values}
    return TrialSpec(**fields, trial_dir=Path(trial_dir))


def run_trial(spec: ModelSpec, values: Mapping[str, Any], trial_dir: Path, reporter: TrialReporter,
              cost: str | None = None) -> dict[str, float]:
    """Train, export and validate one configuration; the validation metrics (+ ``cost.<kind>``) on the val split."""
    from flashsim.drivers import onnx_predictor

    tspec = trial_spec(spec, values, trial_dir)
    fam = family_class(tspec.family)(tspec)  # validates the trial's hyperparameters like any training job
    summary = fam.fit(reporter)
    fam.to_onnx(tspec.onnx_path)
    df = fam.frame("val", fam.cfg["validation_rows"])
    metrics, _ = fam.validate(df, onnx_predictor(tspec.onnx_path), tspec.report_dir)
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if summary.get("val_loss") is not None:
        out["val_loss"] = float(summary["val_loss"])
    if cost == "flops":
        from flashsim.tune.cost import flops_per_particle

        out["cost.flops"] = flops_per_particle(tspec.onnx_path)
    elif cost == "latency":
        from flashsim.tune.cost import latency_per_particle

        x = fam.features(df)[:10000]
        out["cost.latency"] = latency_per_particle(tspec.onnx_path, x, fam.noise_dim)
    return out
