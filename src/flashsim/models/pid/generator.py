"""PID generators (RICH, MUON, GlobalPID) per species: the shared conditional generator plus PID specifics.

- conditions may use the muon LLs with NaN filled (``*_filled``, see :mod:`flashsim.models.pid.common`);
- ``unit_interval`` targets (ProbNN) are clamped to [0, 1] by the output transform (the inverse quantile transform
  already stays inside the range seen in training; the clamp makes the guarantee explicit in the graph);
- sWeights are checked (finite, positive sum) before training;
- validation adds weighted PID cut efficiencies (``cuts``) in momentum bins, model vs reference;
- ``threshold_features`` (RICH radiators of ``detector.rich``) append, after the quantile transform of the
  conditions, Cherenkov-threshold features of the momentum for each mass hypothesis (:class:`ThresholdFeatures`):
  the graph computes them from the physical momentum input, as training does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flashsim.models import generator
from flashsim.models.pid import common as pc

PID_SCHEMA: dict[str, Any] = {
    "cuts": {"type": "array", "items": {"type": "string"}, "default": [],
             "description": "PID cuts '<column> <op> <value>' whose efficiency vs p is validated"},
    "unit_interval": {"type": "array", "items": {"type": "string"}, "default": [],
                      "description": "targets bounded to [0, 1] (ProbNN)"},
    "momentum": {"type": "string", "default": pc.KINEMATICS[0], "description": "column of the momentum bins"},
    "blocks": {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 1},
               "default": [],
               "description": "autoregressive blocks of targets: each block's core is conditioned on the conditions "
                              "and the earlier blocks' targets (e.g. PIDs, then ProbNNs given the PIDs); [] = one "
                              "joint core"},
    "threshold_features": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "default": [],
                           "description": "RICH radiators (names of params.yaml detector.rich) whose Cherenkov "
                                          "thresholds of the mu, pi, K and p hypotheses become extra conditions: "
                                          "the relative photon yield 1 - (p_thr/p)^2 (0 below threshold) and a "
                                          "smooth step tanh(10 log(p/p_thr)), appended after the quantile "
                                          "transform; [] = off"},
    "differences": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
                    "description": "target -> another target: the core generates their difference and the graph "
                                   "adds the other back (exact equalities, e.g. DLLp == DLLk below both "
                                   "thresholds, become an exact atom at 0)"},
}


THRESHOLD_HYPOTHESES = ("mu", "pi", "K", "p")
"""Mass hypotheses of the threshold features (heavier than the electron, whose thresholds lie below any track)."""
STEP_SHARPNESS = 10.0
"""``tanh(STEP_SHARPNESS * log(p / p_thr))``: a step about 10 % of the threshold wide."""


def threshold_momenta(radiators: dict[str, float], names: list[str]) -> list[float]:
    """Cherenkov thresholds (MeV/c), radiator-major then :data:`THRESHOLD_HYPOTHESES`, of the named radiators."""
    from flashsim.detector import SPECIES_MASS, cherenkov_threshold

    return [cherenkov_threshold(SPECIES_MASS[h], radiators[r]) for r in names for h in THRESHOLD_HYPOTHESES]


def threshold_features_np(p: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Numpy reference of :class:`ThresholdFeatures`' extra columns for momenta ``p`` (MeV/c): per threshold the
    relative photon yield ``max(0, 1 - (p_thr/p)^2)`` (``sin^2`` of the Cherenkov angle over its saturated value),
    then per threshold the smooth step ``tanh(k log(p / p_thr))``; float32 like the graph."""
    p = np.maximum(np.asarray(p, np.float32).reshape(-1, 1), np.float32(1.0))
    ratio = p / np.asarray(thresholds, np.float32)[None, :]
    yld = np.maximum(np.float32(1.0) - np.float32(1.0) / (ratio * ratio), np.float32(0.0))
    step = np.tanh(np.float32(STEP_SHARPNESS) * np.log(ratio))
    return np.hstack([yld, step]).astype(np.float32)


class ThresholdFeatures(nn.Module):
    """``x -> [x_transform(x), yield(p), step(p)]``: the conditions' transform plus the Cherenkov-threshold
    features of the physical momentum column ``p_index`` (see :func:`threshold_features_np`)."""

    def __init__(self, x_transform: nn.Module, p_index: int, thresholds: list[float]) -> None:
        super().__init__()
        self.x_transform, self.p_index = x_transform, p_index
        self.register_buffer("thr", torch.tensor(thresholds, dtype=torch.float32).reshape(1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.clamp(x[:, self.p_index:self.p_index + 1], min=1.0)
        ratio = p / self.thr
        yld = torch.clamp(1.0 - 1.0 / (ratio * ratio), min=0.0)
        step = torch.tanh(STEP_SHARPNESS * torch.log(ratio))
        return torch.cat([self.x_transform(x), yld, step], dim=1)


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


class BlockCore(nn.Module):
    """Autoregressive cores: block k generates its targets from the conditions and the blocks before it (all in
    the transformed space); the noise is split in consecutive slices, one per block."""

    def __init__(self, cores: list[nn.Module], blocks: list[list[int]], n_out: int) -> None:
        super().__init__()
        self.cores = nn.ModuleList(cores)
        self.blocks, self.n_out = blocks, n_out
        self.noise_dims = [int(c.noise_dim) for c in cores]
        self.noise_dim = sum(self.noise_dims)

    def forward(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        cols: list[torch.Tensor | None] = [None] * self.n_out
        cond, a = c, 0
        for core, block, nd in zip(self.cores, self.blocks, self.noise_dims, strict=True):
            out = core(cond, z[:, a:a + nd])
            a += nd
            for j, col in enumerate(block):
                cols[col] = out[:, j]
            cond = torch.cat([cond, out], dim=1)
        return torch.stack(cols, dim=1)  # type: ignore[arg-type]


class Family(generator.Family):
    SCHEMA: ClassVar[dict[str, Any]] = {**generator.GEN_SCHEMA, **PID_SCHEMA, **pc.SWEIGHT_SCHEMA, **pc.EFF_SCHEMA}

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.thresholds()  # a bad threshold_features option fails before any work

    def derive(self, df):
        return pc.derive(super().derive(df))

    # ------------------------------------------------------------ Cherenkov-threshold features
    def thresholds(self) -> list[float]:
        """Threshold momenta (MeV/c) of ``threshold_features`` ([] when off); ConfigError for an unknown
        radiator or a momentum column that is not a feature."""
        from flashsim.detector import rich_radiators
        from flashsim.errors import ConfigError

        names = list(self.cfg.get("threshold_features") or [])
        if not names:
            return []
        radiators = rich_radiators(self.spec.params)
        unknown = [r for r in names if r not in radiators]
        if unknown:
            raise ConfigError(f"models/{self.spec.name}/threshold_features: unknown radiators {unknown} "
                              f"(detector.rich has {sorted(radiators)})")
        if self.cfg["momentum"] not in self.feature_names:
            raise ConfigError(f"models/{self.spec.name}/threshold_features: the momentum column "
                              f"{self.cfg['momentum']!r} must be a feature")
        return threshold_momenta(radiators, names)

    def conditions(self, qx, x: np.ndarray) -> np.ndarray:
        """The core's conditions (training): transformed features, then the threshold features if any."""
        c = qx.transform(x).astype(np.float32)
        thr = self.thresholds()
        if not thr:
            return c
        return np.hstack([c, threshold_features_np(x[:, self.feature_names.index(self.cfg["momentum"])], thr)])

    def _assemble(self, qx, qy, core):
        from flashsim.models import generative as G

        thr = self.thresholds()
        xt = ThresholdFeatures(qx, self.feature_names.index(self.cfg["momentum"]), thr) if thr else qx
        return G.PhysicalGenerator(xt, core, qy.inverse(), self.post_module()).eval()

    def _own_fit(self) -> bool:
        return bool(self.cfg["blocks"] or self.cfg.get("threshold_features"))

    def difference_pairs(self) -> list[tuple[int, int]]:
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
        for i, j in self.difference_pairs():
            y[:, i] = y[:, i] - y[:, j]
        return y

    def targets(self, df) -> np.ndarray:
        return self._columns(df, self.output_names(), "target")

    def post_module(self) -> nn.Module | None:
        shared = super().post_module()
        names = self.output_names_core()
        unknown = [c for c in self.cfg["unit_interval"] if c not in names]
        if unknown:
            from flashsim.errors import ConfigError

            raise ConfigError(f"models/{self.spec.name}/unit_interval: {unknown} are not targets")
        cols = [names.index(c) for c in self.cfg["unit_interval"]]
        pairs = self.difference_pairs()
        mods = [m for m in (shared, AddColumns(len(names), pairs) if pairs else None,
                            ClampColumns(len(names), cols) if cols else None) if m is not None]
        return None if not mods else mods[0] if len(mods) == 1 else nn.Sequential(*mods)

    def training_weights(self, df, seen: list[np.ndarray]) -> np.ndarray | None:
        return pc.training_weights(self, df, seen)

    # ------------------------------------------------------------ autoregressive blocks
    def _blocks(self) -> list[list[int]]:
        names = self.output_names_core()
        if not self.cfg["blocks"]:
            return [list(range(len(names)))]
        flat = [n for b in self.cfg["blocks"] for n in b]
        if sorted(flat) != sorted(names):
            from flashsim.errors import ConfigError

            raise ConfigError(f"models/{self.spec.name}/blocks must partition the targets {names}")
        return [[names.index(n) for n in b] for b in self.cfg["blocks"]]

    def _block_noise(self, n_out: int) -> int:
        return n_out if self.cfg["method"] == "flow" else (self.cfg["noise_dim"] or n_out)

    @property
    def noise_dim(self) -> int:  # type: ignore[override]
        if not self.cfg["blocks"]:
            return super().noise_dim
        return sum(self._block_noise(len(b)) for b in self._blocks())

    def fit(self, ctx) -> dict:
        if not self._own_fit():
            return super().fit(ctx)
        from flashsim.models import generative as G
        from flashsim.preprocessing import QuantileTransform
        from flashsim.training import Checkpointer, DeviceData, normalised_weights

        device = self.setup()
        tr, va = self.frame("train", self.cfg["max_rows"]), self.frame("val", self.cfg["max_rows"])
        spread = np.random.default_rng(self.spec.seed + 11)
        arrays = []
        for df in (tr, va):
            x, y = self.features(df), self.targets_core(df)
            w = self.training_weights(df, [x, y])
            ok = np.isfinite(y).all(axis=1)
            arrays.append((x[ok], y[ok], None if w is None else w[ok]))
        (x, y, w), (xv, yv, wv) = arrays
        qx = QuantileTransform.fit(x, w, self.cfg["n_knots"])
        qy = QuantileTransform.fit(y, w, self.cfg["n_knots"], atoms=self.cfg["atoms"],
                                   max_discrete=self.cfg["max_discrete"])
        c, t = self.conditions(qx, x), qy.transform(y, spread).astype(np.float32)
        cv, tv = self.conditions(qx, xv), qy.transform(yv, spread).astype(np.float32)
        cores, teachers, history, done = [], [], [], []
        dhist: list[dict] = []
        base_key = self.checkpointer().key
        for k, block in enumerate(self._blocks()):
            cond, condv = np.hstack([c, t[:, done]]), np.hstack([cv, tv[:, done]])
            data = DeviceData(device, c=cond, y=t[:, block], w=normalised_weights(w, len(x)))
            val = DeviceData(device, c=condv, y=tv[:, block], w=normalised_weights(wv, len(xv)))
            cfg = {**self.cfg, "noise_dim": self._block_noise(len(block))}
            trainer = G.Trainer(self.cfg["method"], cond.shape[1], len(block), cfg, device, self.spec.seed + k)
            ck = Checkpointer(self.spec.train_dir / f"block{k}", self.cfg["checkpoint_every"],
                              key=f"{base_key}:{self.thresholds()}")  # never resume a stale block
            hist = trainer.fit(data, val, ctx, ck, desc=f"{self.spec.name}[{k}]")
            history += [{**h, "block": k} for h in hist]
            teacher = trainer.final_core()
            core, dh = self.distilled(teacher, data, val, cfg, device, self.spec.seed + k, ctx,
                                      f"{self.spec.name}[{k}]")
            dhist += [{**h, "block": k} for h in dh]
            cores.append(core.cpu())
            teachers.append(teacher.cpu())
            done += block
        self.module = self._assemble(qx, qy, BlockCore(cores, self._blocks(), y.shape[1]))
        payload = {"qx": qx.state(), "qy": qy.state(), "cores": [m.state_dict() for m in teachers],
                   "n_cond": c.shape[1], "n_out": y.shape[1]}
        if self.few_step:
            self.teacher_module = self._assemble(qx, qy, BlockCore(teachers, self._blocks(), y.shape[1]))
            payload["students"] = [m.state_dict() for m in cores]
        self.save(payload)
        out = {"rows": len(x), "val_rows": len(xv), "history": history, "device": str(device),
               "val_loss": history[-1].get("val_loss")}
        if dhist:  # the blocks' held-out distillation losses summed (each block's best state is kept)
            out |= {"distill_seconds": sum(h.get("distill_seconds", 0.0) for h in dhist),
                    "distill_history": dhist, "distill.val_loss": sum(
                min(h["distill.val_loss"] for h in dhist if h["block"] == k) for k in range(len(teachers)))}
        return out

    def load(self) -> None:
        if not self._own_fit():
            return super().load()
        from flashsim.models import generative as G
        from flashsim.preprocessing import QuantileTransform

        s = self.load_payload()
        cores, teachers, n_prev = [], [], 0
        students = s.get("students") or [None] * len(s["cores"])
        for block, state, st in zip(self._blocks(), s["cores"], students, strict=True):
            cfg = {**G.DEFAULTS, **self.cfg, "noise_dim": self._block_noise(len(block))}
            core = G.build_core(self.cfg["method"], s["n_cond"] + n_prev, len(block), cfg)
            core.load_state_dict(state)
            teachers.append(core.eval())
            cores.append(self._student(core, st).eval())
            n_prev += len(block)
        qx, qy = QuantileTransform.from_state(s["qx"]), QuantileTransform.from_state(s["qy"])
        self.module = self._assemble(qx, qy, BlockCore(cores, self._blocks(), s["n_out"]).eval())
        self.teacher_module = (self._assemble(qx, qy, BlockCore(teachers, self._blocks(), s["n_out"]).eval())
                               if self.few_step else None)

    def validate(self, df, predict, report_dir: Path) -> tuple[dict, list[Path]]:
        metrics, plots = super().validate(df, predict, report_dir)
        x, gen, ref, gcols = pc.generated_columns(self, df, predict)
        for n in self.feature_names:  # cuts may also involve conditions
            ref.setdefault(n, df[n].to_numpy(np.float64))
            gcols.setdefault(n, df[n].to_numpy(np.float64))
        m, p = pc.cut_efficiency_report(self, ref, gcols, df[self.cfg["momentum"]].to_numpy(np.float64),
                                        self.weights(df), self.cfg["cuts"], report_dir)
        metrics.update(m)
        metrics.update(pc.truth_metrics(df, x, self.targets(df), gen, self.spec.seed))
        return metrics, plots + p
