"""Shared parts of torch families: device/threads/seed setup, training data on device, model.pt save/load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from flashsim.io.atomic import atomic_output
from flashsim.models import base
from flashsim.training import Checkpointer, choose_device, seed_everything, set_threads

TORCH_SCHEMA: dict[str, Any] = {
    "epochs": {"type": "integer", "minimum": 1},
    "batch_size": {"type": "integer", "minimum": 1},
    "lr": {"type": "number", "exclusiveMinimum": 0},
    "weight_decay": {"type": "number", "minimum": 0},
    "width": {"type": "integer", "minimum": 1},
    "depth": {"type": "integer", "minimum": 1},
    "activation": {"type": "string", "enum": ["relu", "leaky_relu", "silu", "gelu", "tanh"]},
    "amp": {"type": "boolean"},
    "compile": {"type": "boolean"},
    "n_knots": {"type": "integer", "minimum": 2, "default": 256,
                "description": "knots of the quantile transforms"},
    "checkpoint_every": {"type": "integer", "minimum": 1, "default": 5, "description": "epochs"},
}


class TorchFamily(base.Family):
    """Base for torch families; subclasses build ``self.module`` (the exportable physical-units model)."""

    SCHEMA: ClassVar[dict[str, Any]] = TORCH_SCHEMA
    module: torch.nn.Module

    @property
    def model_path(self) -> Path:
        return self.spec.train_dir / "model.pt"

    def setup(self) -> torch.device:
        """Seed, pick the device; on CPU use ``threads`` by the threads rule (:mod:`flashsim.threads`; params.yaml
        default 1 at demo scale: small models gain little from more threads, and OpenMP spinning collapses when
        the cores are shared with parallel jobs)."""
        seed_everything(self.spec.seed)
        device = choose_device(self.cfg["device"])
        if device.type == "cpu":
            set_threads(self.cfg["threads"])
        return device

    def checkpointer(self) -> Checkpointer:
        """Checkpoints keyed by the configuration (all but ``epochs``, so a longer run resumes) and seed, and the
        training files' sizes and modification times: a stale checkpoint is never resumed into another model."""
        import hashlib
        import json

        # a finished trainer checkpoint stays valid when only the epochs or the few-step distillation change
        cfg = {k: v for k, v in self.cfg.items() if k not in ("epochs", "steps", "distill_epochs", "distill_lr")}
        files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.training_files() if p.exists()]
        key = hashlib.sha256(json.dumps({"cfg": cfg, "seed": self.spec.seed, "files": files}, sort_keys=True,
                                        default=str).encode()).hexdigest()
        return Checkpointer(self.spec.train_dir, self.cfg["checkpoint_every"], key=key)

    def save(self, payload: dict) -> None:
        self.spec.train_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.model_path) as tmp:
            torch.save(payload, tmp)

    def load_payload(self) -> dict:
        return torch.load(self.model_path, map_location="cpu", weights_only=False)

    def predict(self, x: np.ndarray, noise: np.ndarray | None = None, batch_size: int = 65536) -> np.ndarray:
        self.module.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                args = [torch.tensor(np.asarray(x[i:i + batch_size], dtype=np.float32))]
                if self.noise_dim:
                    args.append(torch.tensor(np.asarray(noise[i:i + batch_size], dtype=np.float32)))
                out.append(self.module(*args))
        return torch.cat(out).numpy() if out else np.empty((0, 0), dtype=np.float32)

    def to_onnx(self, path: Path) -> None:
        from flashsim.export import export_torch

        export_torch(self.module, path, len(self.feature_names), self.noise_dim)
