"""LightGBM classifier family (binary or multi-class) on feature columns; ONNX with exact threshold parity."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flashsim.io.atomic import atomic_output
from flashsim.models import base
from flashsim.progress import lightgbm_callback
from flashsim.threads import job_threads

log = logging.getLogger(__name__)


class Family(base.ClassifierMixin, base.Family):
    task = "classifier"
    REQUIRED = ("features", "label")
    SCHEMA: ClassVar[dict[str, Any]] = {
        **base.ClassifierMixin.CLASSIFIER_SCHEMA,
        "n_estimators": {"type": "integer", "minimum": 1, "default": 100},
        "num_leaves": {"type": "integer", "minimum": 2, "default": 16},
        "max_depth": {"type": "integer", "default": -1},
        "learning_rate": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
        "min_child_samples": {"type": "integer", "minimum": 1, "default": 50},
        "subsample": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.8},
        "colsample_bytree": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1.0},
        "reg_lambda": {"type": "number", "minimum": 0, "default": 0.0},
        "early_stopping_rounds": {"type": "integer", "minimum": 0, "default": 0},
    }

    @property
    def model_path(self) -> Path:
        return self.spec.train_dir / "model.txt"

    def _estimator(self):
        import lightgbm as lgb

        c = self.cfg
        return lgb.LGBMClassifier(
            n_estimators=c["n_estimators"], num_leaves=c["num_leaves"], max_depth=c["max_depth"],
            learning_rate=c["learning_rate"], min_child_samples=c["min_child_samples"], subsample=c["subsample"],
            subsample_freq=1 if c["subsample"] < 1 else 0, colsample_bytree=c["colsample_bytree"],
            reg_lambda=c["reg_lambda"], random_state=self.spec.seed,
            n_jobs=job_threads(c["threads"]),
            deterministic=True, force_row_wise=True, verbose=-1)

    def fit(self, ctx) -> dict:
        import lightgbm as lgb

        tr = self.frame("train", self.cfg["max_rows"])
        va = self.frame("val", self.cfg["max_rows"])
        x, y, w = self.features(tr), self.labels(tr), self.weights(tr)
        xv, yv, wv = self.features(va), self.labels(va), self.weights(va)
        est = self._estimator()
        evals: dict = {}
        callbacks = [lgb.record_evaluation(evals), lightgbm_callback(self.spec.name, int(self.cfg["n_estimators"]))]
        if self.cfg["early_stopping_rounds"]:
            callbacks.append(lgb.early_stopping(self.cfg["early_stopping_rounds"], verbose=False))
        est.fit(x, y, sample_weight=w, eval_X=(xv,), eval_y=(yv,), eval_sample_weight=None if wv is None else [wv],
                eval_names=["val"], callbacks=callbacks)
        hist = next(iter(evals.get("val", {}).values()), [])
        for i, v in enumerate(hist):
            ctx.log_metrics({"val_loss": v}, step=i)
        self.model = est.booster_
        self.spec.train_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.model_path) as tmp:
            est.booster_.save_model(str(tmp))
        summary = {"rows": len(tr), "val_rows": len(va), "best_iteration": int(est.best_iteration_ or len(hist)),
                   "val_loss": float(hist[-1]) if hist else None, "history": [{"epoch": i, "val_loss": v}
                                                                              for i, v in enumerate(hist)]}
        return summary

    def load(self) -> None:
        import lightgbm as lgb

        self.model = lgb.Booster(model_file=str(self.model_path))

    def predict(self, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        booster = self.model.booster_ if hasattr(self.model, "booster_") else self.model
        p = booster.predict(np.asarray(x, dtype=np.float32))
        return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p

    def to_onnx(self, path: Path) -> None:
        from flashsim.export import export_lightgbm

        booster = self.model.booster_ if hasattr(self.model, "booster_") else self.model
        export_lightgbm(booster, path, len(self.feature_names))

    def parity_rows(self, x: np.ndarray) -> np.ndarray:
        from flashsim.export import threshold_rows

        return threshold_rows(self.model, x, n=self.cfg["parity"]["rows"], seed=self.spec.seed)

    def summary_extra(self) -> dict:
        return {"n_trees": int(self.model.num_trees())}

