"""Generic conditional generator family (``method: gan | flow``) from feature and target columns.

ONNX: ``x`` (physical conditions), ``noise`` (standard normal [N, Z]) -> quantile transform -> core ->
inverse target transform -> optional post-processing -> ``y`` (physical targets). Families with derived targets or
structured outputs subclass this and override ``targets``/``output_names``/``post_module``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flashsim.errors import ConfigError
from flashsim.models import generative as G
from flashsim.models.target_groups import GroupedGenerator, GroupQuantile
from flashsim.models.torch_base import TORCH_SCHEMA, TorchFamily
from flashsim.preprocessing import QuantileTransform
from flashsim.training import DeviceData, normalised_weights

GEN_SCHEMA = {
    **TORCH_SCHEMA,
    **{k: {**TORCH_SCHEMA[k], "default": G.DEFAULTS[k]} for k in TORCH_SCHEMA if k in G.DEFAULTS},
    "targets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "method": {"type": "string", "enum": list(G.METHODS), "default": G.DEFAULTS["method"]},
    "noise_dim": {"type": "integer", "minimum": 0, "default": 0},
    "lr_schedule": {"type": "string", "enum": ["cosine", "constant"], "default": "cosine"},
    "n_critic": {"type": "integer", "minimum": 1, "default": G.DEFAULTS["n_critic"]},
    "gp_lambda": {"type": "number", "minimum": 0, "default": G.DEFAULTS["gp_lambda"]},
    "critic_width": {"type": "integer", "minimum": 1, "default": G.DEFAULTS["critic_width"]},
    "critic_depth": {"type": "integer", "minimum": 1, "default": G.DEFAULTS["critic_depth"]},
    "ode_steps": {"type": "integer", "minimum": 1, "default": G.DEFAULTS["ode_steps"],
                  "description": "flow: midpoint steps of the trained sampler (the teacher: 2 x ode_steps calls)"},
    "steps": {"type": "integer", "minimum": 0, "maximum": 4, "default": G.DEFAULTS["steps"],
              "description": "flow: network calls per row of the exported sampler; 0: the ode_steps midpoint "
                             "teacher; 1-4: a few-step student distilled from it in the same train job "
                             "(docs/models.md 'Few-step generators'); method gan: must be 0"},
    "distill_epochs": {"type": "integer", "minimum": 1, "default": G.DEFAULTS["distill_epochs"],
                       "description": "flow with steps > 0: distillation epochs (best held-out state kept)"},
    "distill_lr": {"type": "number", "exclusiveMinimum": 0, "default": G.DEFAULTS["distill_lr"]},
    "ema": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0},
    "atoms": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0,
              "description": "target values holding at least this weight fraction are generated exactly "
                             "(point masses, e.g. a DLL of exactly 0); 0: off"},
    "max_discrete": {"type": "integer", "minimum": 0, "default": 64,
                     "description": "targets with at most this many distinct values are generated as discrete "
                                    "(every value an atom: only training values, at their frequencies); 0: off"},
}

# options of the target transform, honoured by this class's fit (not by subclasses with their own fit)
TARGET_SCHEMA: dict[str, Any] = {
    "target_groups": {
        "type": "object", "additionalProperties": False, "required": ["by", "targets"],
        "description": "Gaussianise these targets per group of the 0/1 features `by` (a quantile transform per "
                       "group, in the graph; flashsim.models.target_groups) before the pooled one, so no group's "
                       "tails own the others' (e.g. the electrons' and upstream tracks' dp/p tails)",
        "properties": {"by": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 8},
                       "targets": {"type": "array", "items": {"type": "string"}, "minItems": 1}}},
    "tail_knots": {"type": "integer", "minimum": 0, "default": 0,
                   "description": "extra knots per tail of the target quantile transform, log-spaced in quantile "
                                  "down to the sample's extreme (flashsim.preprocessing.tail_grid); 0: off"},
}


class Family(TorchFamily):
    task = "generator"
    REQUIRED = ("features",)
    SCHEMA: ClassVar[dict[str, Any]] = {**GEN_SCHEMA, **TARGET_SCHEMA}

    teacher_module: nn.Module | None = None
    """Few-step flows (``steps`` > 0): the ``ode_steps`` teacher in physical units, for validation (after load)."""

    def __init__(self, spec) -> None:
        super().__init__(spec)
        if self.cfg["method"] != "flow" and self.cfg["steps"]:
            raise ConfigError(f"models/{spec.name}/steps: a few-step sampler needs method flow "
                              f"(method {self.cfg['method']!r} has steps 0)")

    @property
    def few_step(self) -> bool:
        return self.cfg["method"] == "flow" and self.cfg["steps"] > 0

    def distilled(self, teacher: nn.Module, data: DeviceData, val: DeviceData, cfg: dict, device, seed: int,
                  ctx, desc: str) -> tuple[nn.Module, list[dict]]:
        """The few-step student of a trained teacher core (``steps`` > 0), else the teacher itself."""
        if not self.few_step:
            return teacher, []
        t0 = time.perf_counter()
        student, history = G.distill(teacher, data, val, cfg, device, seed, ctx, desc=f"{desc} distill")
        history[-1]["distill_seconds"] = time.perf_counter() - t0
        return student, history

    @property
    def noise_dim(self) -> int:  # type: ignore[override]
        if self.cfg["method"] == "flow":
            return len(self.output_names_core())
        return self.cfg["noise_dim"] or len(self.output_names_core())

    # targets seen by the core (before post-processing); by default the output columns themselves
    def output_names_core(self) -> list[str]:
        return list(self.cfg["targets"])

    def targets_core(self, df) -> np.ndarray:
        return self._columns(df, self.output_names_core(), "target")

    def output_names(self) -> list[str]:
        return self.output_names_core()

    def targets(self, df) -> np.ndarray:
        """Reference values of the ONNX outputs (what validation compares with)."""
        return self.targets_core(df)

    def post_module(self) -> nn.Module | None:
        """Physical core outputs -> ONNX outputs (e.g. covariance assembly); None: identity."""
        return None

    groups: GroupQuantile | None = None  # per-group target transforms (``target_groups``), fitted

    def _assemble(self, qx: QuantileTransform, qy: QuantileTransform, core: nn.Module) -> G.PhysicalGenerator:
        if self.groups is not None:
            return GroupedGenerator(qx, core, qy.inverse(), self.groups, self.post_module()).eval()
        return G.PhysicalGenerator(qx, core, qy.inverse(), self.post_module()).eval()

    def _fit_groups(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> GroupQuantile | None:
        """The ``target_groups`` transforms fitted on the training rows; unknown names or a non-0/1 flag are a
        ConfigError naming the key."""
        tg = self.cfg.get("target_groups")
        if not tg:
            return None
        key = f"models/{self.spec.name}/target_groups"
        feats, outs = self.feature_names, self.output_names_core()
        for what, names, known in (("by", tg["by"], feats), ("targets", tg["targets"], outs)):
            if bad := [n for n in names if n not in known]:
                raise ConfigError(f"{key}/{what}: {', '.join(bad)} not among the model's "
                                  f"{'features' if what == 'by' else 'targets'} ({', '.join(known)})")
        flags = [feats.index(n) for n in tg["by"]]
        try:
            return GroupQuantile.fit(x, y, flags, [outs.index(n) for n in tg["targets"]], w, self.cfg["n_knots"],
                                     self.cfg["tail_knots"])
        except ValueError as err:
            raise ConfigError(f"{key}/by: {err} ({', '.join(tg['by'])})") from err

    def fit(self, ctx) -> dict:
        device = self.setup()
        tr = self.frame("train", self.cfg["max_rows"])
        va = self.frame("val", self.cfg["max_rows"])
        x, y = self.features(tr), self.targets_core(tr)
        w = self.training_weights(tr, [x, y])
        ok = np.isfinite(y).all(axis=1)
        x, y, w = x[ok], y[ok], None if w is None else w[ok]
        self.groups = self._fit_groups(x, y, w)
        if self.groups is not None:
            y = self.groups.transform(x, y)
        qx = QuantileTransform.fit(x, w, self.cfg["n_knots"])
        qy = QuantileTransform.fit(y, w, self.cfg["n_knots"], atoms=self.cfg["atoms"],
                                 max_discrete=self.cfg["max_discrete"], tail_knots=self.cfg.get("tail_knots", 0))
        spread = np.random.default_rng(self.spec.seed + 11)  # atoms of the targets spread over their interval
        xv, yv = self.features(va), self.targets_core(va)
        wv = self.training_weights(va, [xv, yv])
        okv = np.isfinite(yv).all(axis=1)
        xv, yv, wv = xv[okv], yv[okv], None if wv is None else wv[okv]
        if self.groups is not None:
            yv = self.groups.transform(xv, yv)
        data = DeviceData(device, c=qx.transform(x).astype(np.float32),
                          y=qy.transform(y, spread).astype(np.float32), w=normalised_weights(w, len(x)))
        val = DeviceData(device, c=qx.transform(xv).astype(np.float32),
                         y=qy.transform(yv, spread).astype(np.float32), w=normalised_weights(wv, len(xv)))
        trainer = G.Trainer(self.cfg["method"], x.shape[1], y.shape[1], self.cfg, device, self.spec.seed)
        history = trainer.fit(data, val, ctx, self.checkpointer(), desc=self.spec.name)
        teacher = trainer.final_core()
        core, dhist = self.distilled(teacher, data, val, self.cfg, device, self.spec.seed, ctx, self.spec.name)
        core, teacher = core.cpu(), teacher.cpu()
        self.module = self._assemble(qx, qy, core)
        payload = {"qx": qx.state(), "qy": qy.state(), "core": teacher.state_dict(), "n_cond": x.shape[1],
                   "n_out": y.shape[1],
                   **({"groups": self.groups.state()} if self.groups is not None else {})}
        if self.few_step:
            self.teacher_module = self._assemble(qx, qy, teacher)
            payload["student"] = core.state_dict()
        self.save(payload)
        out = {"rows": len(x), "val_rows": len(xv), "history": history, "device": str(device),
               "val_loss": history[-1].get("val_loss")}
        if dhist:
            out |= {"distill_history": dhist, "distill.val_loss": min(h["distill.val_loss"] for h in dhist),
                    "distill_seconds": dhist[-1]["distill_seconds"]}
        return out

    def load(self) -> None:
        s = self.load_payload()
        core = G.build_core(self.cfg["method"], s["n_cond"], s["n_out"], {**G.DEFAULTS, **self.cfg})
        core.load_state_dict(s["core"])
        self.groups = GroupQuantile.from_state(s["groups"]) if "groups" in s else None
        qx, qy = QuantileTransform.from_state(s["qx"]), QuantileTransform.from_state(s["qy"])
        self.module = self._assemble(qx, qy, self._student(core, s.get("student")).eval())
        self.teacher_module = self._assemble(qx, qy, core.eval()) if self.few_step else None

    def _student(self, teacher: nn.Module, state: dict | None) -> nn.Module:
        """The exported core: the teacher, or (``steps`` > 0) the distilled student saved by fit."""
        if not self.few_step:
            return teacher
        if state is None:
            from flashsim.errors import InputError

            raise InputError(f"{self.spec.name}: steps {self.cfg['steps']} but the trained model has no distilled "
                             f"student (retrain: `flashsim train {self.spec.name}`)", file=str(self.model_path))
        student = G.build_student(teacher, self.cfg["steps"])
        student.load_state_dict(state)
        return student

    def gan_twin(self, seed: int = 0) -> nn.Module:
        """A one-pass GAN generator of this model's width and depth between its trained transforms, with
        UNTRAINED (seeded random) weights: the cost of Lamarr's deployed kind, for benchmarks only."""
        s = self.load_payload()
        torch.manual_seed(seed)
        core = G.build_core("gan", s["n_cond"], s["n_out"], {**G.DEFAULTS, **self.cfg, "noise_dim": s["n_out"]})
        self.groups = GroupQuantile.from_state(s["groups"]) if "groups" in s else None
        return self._assemble(QuantileTransform.from_state(s["qx"]), QuantileTransform.from_state(s["qy"]),
                              core.eval())

    def teacher_predict(self, x: np.ndarray, noise: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """The ``ode_steps`` teacher on the same rows and noise (few-step validation); loads the model if needed."""
        if self.teacher_module is None:
            self.load()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                out.append(self.teacher_module(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32),
                                               torch.as_tensor(noise[i:i + batch_size], dtype=torch.float32)))
        return torch.cat(out).numpy()

    def validate(self, df, predict, report_dir):
        """The default generator metrics; flows also against their ``ode_steps`` teacher (a teacher itself: 0)."""
        from flashsim.validation import default as validate_default

        teacher = self.teacher_predict if self.few_step else predict if self.cfg["method"] == "flow" else None
        return validate_default.generator(self, df, predict, report_dir, teacher=teacher)

    def predict(self, x: np.ndarray, noise: np.ndarray | None = None, batch_size: int = 65536) -> np.ndarray:
        if noise is None:
            noise = np.random.default_rng(self.spec.seed).standard_normal((len(x), self.noise_dim))
        return super().predict(x, noise, batch_size)



