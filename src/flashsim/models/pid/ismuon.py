"""isMuon classifier per species: the shared torch MLP classifier, sWeighted, with the isMuon efficiency vs
momentum (model vs reference) in the validation report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flashsim.models import mlp_classifier
from flashsim.models.pid import common as pc

ISMUON_SCHEMA: dict[str, Any] = {
    "momentum": {"type": "string", "default": pc.KINEMATICS[0], "description": "column of the momentum bins"},
}


class Family(mlp_classifier.Family):
    SCHEMA: ClassVar[dict[str, Any]] = {**mlp_classifier.Family.SCHEMA, **ISMUON_SCHEMA, **pc.SWEIGHT_SCHEMA,
                                        **pc.EFF_SCHEMA}

    def training_weights(self, df, seen: list[np.ndarray]) -> np.ndarray | None:
        return pc.training_weights(self, df, seen)

    def validate(self, df, predict, report_dir: Path) -> tuple[dict, list[Path]]:
        metrics, plots = super().validate(df, predict, report_dir)
        label = self.cfg["label"]
        probs = np.asarray(predict(self.features(df), None), dtype=np.float64)
        positive = list(self.cfg["classes"]).index(1) if 1 in self.cfg["classes"] else probs.shape[1] - 1
        ref = {label: df[label].to_numpy(np.float64)}
        gen = {f"P:{label}": probs[:, positive]}
        m, p = pc.cut_efficiency_report(self, ref, gen, df[self.cfg["momentum"]].to_numpy(np.float64),
                                        self.weights(df), [f"{label} > 0.5"], report_dir)
        metrics.update(m)
        return metrics, plots + p
