"""PID generators (RICH, MUON, GlobalPID) per species: the shared conditional generator plus PID specifics.

- conditions may use the muon LLs with NaN filled (``*_filled``, see :mod:`flashsim.models.pid_common`);
- ``unit_interval`` targets (ProbNN) are clamped to [0, 1] by the output transform (the inverse quantile transform
  already stays inside the range seen in training; the clamp makes the guarantee explicit in the graph);
- sWeights are checked (finite, positive sum) before training;
- validation adds weighted PID cut efficiencies (``cuts``) in momentum bins, model vs reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flashsim.models import generator
from flashsim.models import pid_common as pc

PID_SCHEMA: dict[str, Any] = {
    "cuts": {"type": "array", "items": {"type": "string"}, "default": [],
             "description": "PID cuts '<column> <op> <value>' whose efficiency vs p is validated"},
    "unit_interval": {"type": "array", "items": {"type": "string"}, "default": [],
                      "description": "targets bounded to [0, 1] (ProbNN)"},
    "momentum": {"type": "string", "default": pc.KINEMATICS[0], "description": "column of the momentum bins"},
    "differences": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
                    "description": "target -> another target: the core generates their difference and the graph "
                                   "adds the other back (exact equalities, e.g. DLLp == DLLk below both "
                                   "thresholds, become an exact atom at 0)"},
}


class ClampColumns(nn.Module):
    """Clamp the given output columns to [lo, hi]; the others pass through."""

    def __init__(self, n_out: int, columns: list[int], lo: float = 0.0, hi: float = 1.0) -> None:
        super().__init__()
        lo_v = torch.full((n_out,), -torch.inf)
        hi_v = torch.full((n_out,), torch.inf)
        lo_v[columns], hi_v[columns] = lo, hi
        self.register_buffer("lo", lo_v)
        self.register_buffer("hi", hi_v)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(y, self.lo), self.hi)


class AddColumns(nn.Module):
    """``y[:, i] += y[:, j]`` for each (i, j) pair, sources taken before any addition."""

    def __init__(self, n_out: int, pairs: list[tuple[int, int]]) -> None:
        super().__init__()
        self.n_out, self.pairs = n_out, pairs

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        out = [y[:, k] for k in range(y.shape[1])]
        for i, j in self.pairs:  # exact float addition (a matmul would not keep d == 0 -> y_i == y_j exactly)
            out[i] = y[:, i] + y[:, j]
        return torch.stack(out, dim=1)


class Family(generator.Family):
    SCHEMA: ClassVar[dict[str, Any]] = {**generator.GEN_SCHEMA, **PID_SCHEMA, **pc.SWEIGHT_SCHEMA}

    def derive(self, df):
        return pc.derive(super().derive(df))

    def _difference_pairs(self) -> list[tuple[int, int]]:
        names = self.output_names_core()
        pairs = []
        for a, b in self.cfg["differences"].items():
            if a not in names or b not in names or a == b or b in self.cfg["differences"]:
                from flashsim.errors import ConfigError

                raise ConfigError(f"models/{self.spec.name}/differences: {a} -> {b} must map a target to another "
                                  f"target that is not itself a difference")
            pairs.append((names.index(a), names.index(b)))
        return pairs

    def targets_core(self, df) -> np.ndarray:
        y = np.array(super().targets_core(df))  # a copy: the frame's buffer may be read-only
        for i, j in self._difference_pairs():
            y[:, i] = y[:, i] - y[:, j]
        return y

    def targets(self, df) -> np.ndarray:
        return self._columns(df, self.output_names(), "target")

    def weights(self, df) -> np.ndarray | None:
        return pc.check_weights(super().weights(df), file=str(self.spec.prepared("train")),
                                branch=self.cfg.get("weight"))

    def post_module(self) -> nn.Module | None:
        shared = super().post_module()
        names = self.output_names_core()
        unknown = [c for c in self.cfg["unit_interval"] if c not in names]
        if unknown:
            from flashsim.errors import ConfigError

            raise ConfigError(f"models/{self.spec.name}/unit_interval: {unknown} are not targets")
        cols = [names.index(c) for c in self.cfg["unit_interval"]]
        pairs = self._difference_pairs()
        mods = [m for m in (shared, AddColumns(len(names), pairs) if pairs else None,
                            ClampColumns(len(names), cols) if cols else None) if m is not None]
        return None if not mods else mods[0] if len(mods) == 1 else nn.Sequential(*mods)

    def training_weights(self, df, seen: list[np.ndarray]) -> np.ndarray | None:
        return pc.training_weights(self, df, seen)

    def validate(self, df, predict, report_dir: Path) -> tuple[dict, list[Path]]:
        metrics, plots = super().validate(df, predict, report_dir)
        x = self.features(df)
        noise = np.random.default_rng(self.spec.seed + 7).standard_normal((len(x), self.noise_dim))
        gen = np.asarray(predict(x, noise.astype(np.float32)), dtype=np.float64)
        names = self.output_names()
        ref = {n: df[n].to_numpy(np.float64) for n in names}
        gcols = {n: gen[:, j] for j, n in enumerate(names)}
        for n in self.feature_names:  # cuts may also involve conditions
            ref.setdefault(n, df[n].to_numpy(np.float64))
            gcols.setdefault(n, df[n].to_numpy(np.float64))
        m, p = pc.cut_efficiency_report(self, ref, gcols, df[self.cfg["momentum"]].to_numpy(np.float64),
                                        self.weights(df), self.cfg["cuts"], report_dir)
        metrics.update(m)
        metrics.update(pc.truth_metrics(df, x, self.targets(df), gen, self.spec.seed))
        return metrics, plots + p
