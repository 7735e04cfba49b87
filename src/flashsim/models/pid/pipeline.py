"""The chained PID pipeline of one species: isMuon -> RICH -> MUON -> GlobalPID in one ONNX graph.

Input ``x`` = the track kinematics and occupancy (physical units; flash-simulation names ``p, eta, nTracks,
charge``, which map to the calibration names the stages were trained with), ``noise`` = standard normal [N, Z] split as
``[isMuon draw (1) | RICH noise | MUON noise | GlobalPID noise]``. The isMuon flag is drawn inside the graph as
``Phi(noise_0) < P(isMuon)``; the muon LLs are NaN where it is 0 (and enter GlobalPID as the filled value, as in
training). Output ``y`` = ``[isMuon, RichDLL*, Muon*LL, PID*, ProbNN*]`` under the data contract's PID names (as in the
signal sample), so the flash-simulation runtime stores them as they are.

"Training" assembles the already trained stage models (``stages:`` in params) — nothing is fitted here — so the
pipeline always matches the individual models it was built from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flashsim.errors import ConfigError, InputError
from flashsim.models import base, get_family, get_spec
from flashsim.models.pid import common as pc
from flashsim.models.torch_base import TorchFamily

STAGES = ("ismuon", "rich", "muon", "global")

PIPELINE_SCHEMA: dict[str, Any] = {
    "stages": {"type": "object", "additionalProperties": False, "required": list(STAGES),
               "properties": {s: {"type": "string"} for s in STAGES},
               "description": "model names of the stages (species substituted)"},
    "cuts": {"type": "array", "items": {"type": "string"}, "default": []},
    "momentum": {"type": "string", "default": "p"},
    "checkpoint_every": {"type": "integer", "minimum": 1, "default": 1},
    **pc.EFF_SCHEMA,
}


class ChainedPID(nn.Module):
    """The four stage modules wired through a bank of named columns (resolved to indices at construction)."""

    def __init__(self, features: list[str], ismuon: nn.Module, ismuon_in: list[str], ismuon_pos: int,
                 rich: nn.Module, rich_in: list[str], rich_out: list[str], rich_z: int,
                 muon: nn.Module, muon_in: list[str], muon_out: list[str], muon_z: int,
                 glob: nn.Module, glob_in: list[str], glob_out: list[str], glob_z: int) -> None:
        super().__init__()
        self.features = list(features)
        self.ismuon, self.rich, self.muon, self.glob = ismuon, rich, muon, glob
        self.ismuon_in, self.rich_in, self.muon_in, self.glob_in = ismuon_in, rich_in, muon_in, glob_in
        self.ismuon_pos = ismuon_pos
        self.rich_out, self.muon_out, self.glob_out = rich_out, muon_out, glob_out
        self.z = (rich_z, muon_z, glob_z)
        self.outputs = [pc.ISMUON, *rich_out, *muon_out, *glob_out]
        filled = {m: f"{m}_filled" for m in muon_out}
        # check every stage input can be resolved from the bank as it is built
        bank = set(features)
        for stage, names, new in (("ismuon", ismuon_in, [pc.ISMUON]), ("rich", rich_in, rich_out),
                                  ("muon", muon_in, [*muon_out, *filled.values()]), ("global", glob_in, glob_out)):
            missing = [n for n in names if n not in bank]
            if missing:
                raise ConfigError(f"pipeline stage {stage}: inputs {missing} are neither pipeline features nor "
                                  f"outputs of an earlier stage")
            bank |= set(new)

    @property
    def noise_dim(self) -> int:
        return 1 + sum(self.z)

    @staticmethod
    def _stack(bank: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
        return torch.stack([bank[n] for n in names], dim=1)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        bank = {n: x[:, i] for i, n in enumerate(self.features)}
        p_mu = self.ismuon(self._stack(bank, self.ismuon_in))[:, self.ismuon_pos]
        u = 0.5 * (1.0 + torch.erf(noise[:, 0] / math.sqrt(2.0)))
        is_mu = (u < p_mu).to(x.dtype)
        bank[pc.ISMUON] = is_mu
        a = 1
        r = self.rich(self._stack(bank, self.rich_in), noise[:, a:a + self.z[0]])
        a += self.z[0]
        for j, n in enumerate(self.rich_out):
            bank[n] = r[:, j]
        m = self.muon(self._stack(bank, self.muon_in), noise[:, a:a + self.z[1]])
        a += self.z[1]
        on = is_mu > 0.5
        for j, n in enumerate(self.muon_out):
            bank[f"{n}_filled"] = torch.where(on, m[:, j], torch.full_like(m[:, j], pc.MUON_FILL))
            bank[n] = torch.where(on, m[:, j], torch.full_like(m[:, j], float("nan")))
        g = self.glob(self._stack(bank, self.glob_in), noise[:, a:a + self.z[2]])
        for j, n in enumerate(self.glob_out):
            bank[n] = g[:, j]
        return self._stack(bank, self.outputs)


class Family(TorchFamily):
    task = "generator"
    REQUIRED = ("features", "stages")
    SCHEMA: ClassVar[dict[str, Any]] = PIPELINE_SCHEMA

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self._stages: dict[str, base.Family] = {}
        self._given: set[str] = set()  # stages set by use_stage: chained as they are, not loaded from disk

    # ------------------------------------------------------------ stages
    def use_stage(self, key: str, fam: base.Family) -> None:
        """Chain this (already loaded) family as stage ``key`` instead of loading the configured one (benchmarks:
        the same pipeline with other generators)."""
        self._stages[key] = fam
        self._given.add(key)

    def stage(self, key: str) -> base.Family:
        if key not in self._stages:
            name = self.cfg["stages"][key]
            fam = get_family(get_spec(name, self.spec.params, root=self.spec.root))
            expected = {"ismuon": "classifier"}.get(key, "generator")
            if fam.task != expected:
                raise ConfigError(f"models/{self.spec.name}/stages/{key}: {name} is a {fam.task}, not a {expected}")
            self._stages[key] = fam
        return self._stages[key]

    @property
    def noise_dim(self) -> int:  # type: ignore[override]
        return 1 + sum(self.stage(k).noise_dim for k in ("rich", "muon", "global"))

    def stage_outputs(self) -> list[str]:
        """The chained outputs under the stages' (calibration-sample) names."""
        return [pc.ISMUON, *(n for k in ("rich", "muon", "global") for n in self.stage(k).output_names())]

    def output_names(self) -> list[str]:
        return [pc.CALIB_TO_FLASH.get(n, n) for n in self.stage_outputs()]

    def derive(self, df):
        return pc.derive(super().derive(df), aliases=True)

    def targets(self, df) -> np.ndarray:
        return df[self.output_names()].to_numpy(np.float64)

    def training_files(self) -> list[Path]:
        files: list[Path] = []
        for k in STAGES:
            files += [f for f in self.stage(k).training_files() if f not in files]
        return files

    # ------------------------------------------------------------ assemble
    def _assemble(self) -> ChainedPID:
        fams = {k: self.stage(k) for k in STAGES}
        for k, f in fams.items():
            if k in self._given:
                continue
            if not f.model_path.exists():
                raise InputError(f"{self.spec.name}: stage model missing (run `flashsim train {f.spec.name}`)",
                                 file=str(f.model_path))
            f.load()
        ism = fams["ismuon"]
        classes = list(ism.cfg["classes"])
        if ism.cfg["label"] != pc.ISMUON or 1 not in classes:
            raise ConfigError(f"models/{self.spec.name}/stages/ismuon must classify {pc.ISMUON} with class 1")
        return ChainedPID(
            [pc.FLASH_TO_CALIB.get(n, n) for n in self.feature_names], ism.module, ism.feature_names, classes.index(1),
            fams["rich"].module, fams["rich"].feature_names, fams["rich"].output_names(), fams["rich"].noise_dim,
            fams["muon"].module, fams["muon"].feature_names, fams["muon"].output_names(), fams["muon"].noise_dim,
            fams["global"].module, fams["global"].feature_names, fams["global"].output_names(),
            fams["global"].noise_dim).eval()

    def fit(self, ctx) -> dict:
        self.setup()
        self.module = self._assemble()
        self.save({"stages": dict(self.cfg["stages"])})
        for k in STAGES:
            ctx.set_tags({f"stage.{k}": self.cfg["stages"][k]})
        return {"stages": dict(self.cfg["stages"]), "noise_dim": self.module.noise_dim,
                "outputs": self.module.outputs}

    def load(self) -> None:
        self.module = self._assemble()

    def predict(self, x: np.ndarray, noise: np.ndarray | None = None, batch_size: int = 65536) -> np.ndarray:
        if noise is None:
            noise = np.random.default_rng(self.spec.seed).standard_normal((len(x), self.noise_dim))
        return super().predict(x, noise, batch_size)

    # ------------------------------------------------------------ validation
    def validate(self, df, predict, report_dir: Path) -> tuple[dict, list[Path]]:
        from flashsim.validation import default as validate_default

        metrics, plots = validate_default.generator(self, df, predict, report_dir)
        x, gen, ref, gcols = pc.generated_columns(self, df, predict)
        momentum = pc.CALIB_TO_FLASH.get(self.cfg["momentum"], self.cfg["momentum"])
        m, p = pc.cut_efficiency_report(self, ref, gcols, df[momentum].to_numpy(np.float64),
                                        self.weights(df), self.cfg["cuts"], report_dir)
        metrics.update(m)
        metrics.update(pc.truth_metrics(df, x, self.targets(df), gen, self.spec.seed))
        # the NaN convention of the muon LLs holds row by row
        is_mu = gen[:, 0] > 0.5
        mu_cols = [j for j, n in enumerate(self.stage_outputs()) if n in pc.MUON]
        metrics["muon_nan_convention_violations"] = float(
            np.isnan(gen[is_mu][:, mu_cols]).sum() + np.isfinite(gen[~is_mu][:, mu_cols]).sum())
        return metrics, plots + p
