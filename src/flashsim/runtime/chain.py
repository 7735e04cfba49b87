"""The flash-simulation chain: acceptance -> efficiency (track type) -> resolution / covariance -> PID per species.

Everything between the models happens in torch on the chain's device (features, Bernoulli and categorical
sampling, the noise of the generative models, gathering the rows a stage applies to and scattering its results
back), so on a GPU the particles stay on the device from the first model to the last. Random numbers come from
one ``torch.Generator`` per batch, drawn in a fixed order: a batch is reproducible from its seed.

Output columns of a model are named by its card; a name that is a contract column is written as is, residuals
``d<c>`` / ``delta_<c>`` / ``<c>_residual`` (added to the true or generated value of ``c``) and relative residuals
``d<c>_over_<c>`` / ``rel_<c>`` (``truth * (1 + y)``) become ``c``. Stages whose model is missing are skipped
(acceptance then passes every particle, the track type defaults to long for accepted particles).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from flashsim.detector import RECONSTRUCTED_TYPES, SPECIES
from flashsim.io.contract import TRACKING
from flashsim.runtime import features as F
from flashsim.runtime.models import ModelRef
from flashsim.runtime.session import CTreeModel, Device, OrtModel

log = logging.getLogger(__name__)

DEFAULT_SPECIES = SPECIES
INT_COLUMNS = {"acceptance", "type", "isMuon"}


@dataclass
class ChainSpec:
    """Which model plays which role (names in ``models/`` or the registry)."""

    acceptance: str = "acceptance"
    efficiency: str = "efficiency"
    resolution: str = "resolution"
    covariance: str = "covariance"
    pid: dict[str, str] = field(default_factory=lambda: {s: f"pid_pipeline_{s}" for s in DEFAULT_SPECIES})
    pid_types: tuple[int, ...] = RECONSTRUCTED_TYPES  # track types that get a PID response

    def names(self) -> list[str]:
        return [self.acceptance, self.efficiency, self.resolution, self.covariance, *self.pid.values()]


@dataclass
class Replay:
    """Random numbers to use instead of the chain's own draws (to reproduce another runtime, e.g. SQLamarr, on
    the same particles): ``uniform`` [N, 3] (acceptance, track type, isMuon) and each generator's ``noise``
    [N, Z] (rows where the model does not run are ignored), both for the N particles of a batch."""

    uniform: torch.Tensor
    noise: dict[str, torch.Tensor] = field(default_factory=dict)

    def part(self, start: int, stop: int) -> Replay:
        return Replay(self.uniform[start:stop], {k: v[start:stop] for k, v in self.noise.items()})


class Chain:
    """The chained models on one device."""

    def __init__(self, refs: dict[str, ModelRef], device: Device, *, spec: ChainSpec | None = None, threads: int = 0,
                 io: str = "binding", tree_libs: dict[str, tuple[str, str]] | None = None, spin: bool = False,
                 tensor_trees: bool | None = None) -> None:
        self.spec = spec or ChainSpec()
        self.refs = {k: v for k, v in refs.items() if k in self.spec.names()}
        self.device = device
        self.trace: list[tuple[str, torch.Tensor | None, torch.Tensor, torch.Tensor | None]] | None = None
        self.models: dict[str, OrtModel | CTreeModel] = {}
        for name, ref in self.refs.items():
            if tree_libs and name in tree_libs and device.kind == "cpu":
                self.models[name] = CTreeModel(*tree_libs[name], threads=threads)
            else:
                self.models[name] = OrtModel(ref.onnx, device, threads=threads, io=io, spin=spin,
                                             tensor_trees=tensor_trees)
        missing = [n for n in self.spec.names() if n not in self.refs]
        if missing:
            log.warning("chain: no model for %s (stage skipped)", ", ".join(missing))

    @property
    def stages(self) -> list[str]:
        return [n for n in self.spec.names() if n in self.models]

    # --- one model on a subset of rows ---------------------------------------------------------------------------
    def _run(self, name: str, batch: F.Batch, rows: torch.Tensor | None, gen: torch.Generator,
             replay: Replay | None = None) -> torch.Tensor:
        ref = self.refs[name]
        x = batch.matrix(ref.features, rows)
        noise = None
        if ref.noise and replay is not None:
            full = replay.noise[name].to(self.device.torch, torch.float32)
            noise = (full if rows is None else full[rows]).contiguous()
        elif ref.noise:
            noise = torch.randn((x.shape[0], ref.noise), generator=gen, device=self.device.torch)
        if self.trace is not None:  # record every model call (benchmarks replay them per particle)
            self.trace.append((name, rows, x, noise))
        return self.models[name].run(x, noise)

    def _store(self, batch: F.Batch, ref: ModelRef, y: torch.Tensor, rows: torch.Tensor | None) -> None:
        for j, out in enumerate(ref.outputs):
            name, value = _interpret(batch, out, y[:, j], rows)
            if rows is None:
                full = value
            else:  # merge into the column (several PID stages fill disjoint rows of the same column)
                full = batch.columns.get(name)
                if full is None:
                    full = torch.full((batch.n,), math.nan, dtype=torch.float32, device=self.device.torch)
                full[rows] = value
            batch.set(name, full)

    # --- the chain ------------------------------------------------------------------------------------------------
    def run(self, batch: F.Batch, gen: torch.Generator, replay: Replay | None = None) -> F.Batch:
        """Add the simulated columns to ``batch`` (generator-level columns on this chain's device)."""
        s, dev, n = self.spec, self.device.torch, batch.n
        if replay is not None:
            u = replay.uniform.to(dev, torch.float32)
        else:
            u = torch.rand((n, 2), generator=gen, device=dev)  # acceptance and track-type draws
        if s.acceptance in self.models:
            prob = self._run(s.acceptance, batch, None, gen, replay)[:, -1]
            accepted = u[:, 0] < prob
        else:
            accepted = torch.ones(n, dtype=torch.bool, device=dev)
        batch.set("acceptance", accepted.to(torch.int32))
        rows = accepted.nonzero().squeeze(1)
        codes = torch.tensor(F.TYPE_CODES, dtype=torch.int32, device=dev)
        track_type = torch.zeros(n, dtype=torch.int32, device=dev)
        if s.efficiency in self.models:
            probs = self._run(s.efficiency, batch, rows, gen, replay)
            cls = (torch.cumsum(probs, 1) < u[rows, 1:2]).sum(1).clamp(max=probs.shape[1] - 1)
            track_type[rows] = codes[cls]
        else:
            track_type[rows] = 3
        batch.set("type", track_type)
        reco = (track_type > 0).nonzero().squeeze(1)
        for name in (s.resolution, s.covariance):
            if name in self.models:
                self._store(batch, self.refs[name], self._run(name, batch, reco, gen, replay), reco)
        pid_ok = torch.isin(track_type, torch.tensor(s.pid_types, dtype=torch.int32, device=dev))
        for species, name in s.pid.items():
            if name not in self.models:
                continue
            sel = (pid_ok & F.species_rows(batch, species)).nonzero().squeeze(1)
            self._store(batch, self.refs[name], self._run(name, batch, sel, gen, replay), sel)
        _finish(batch, gen, None if replay is None else u[:, 2])
        return batch

    def output_columns(self) -> list[str]:
        cols = ["acceptance", "type"]
        for name in self.stages:
            if name in (self.spec.acceptance, self.spec.efficiency):
                continue
            cols += [_target_name(o) for o in self.refs[name].outputs]
        if "isMuon" in cols:
            cols += [c for c in ("MuonMuLL", "MuonBgLL") if c not in cols]
        if "x_ClosestToBeam" in cols and "y_ClosestToBeam" in cols:
            cols.append("z_ClosestToBeam")
        return list(dict.fromkeys(cols))


_RELATIVE = re.compile(r"^d(?P<col>\w+)_over_(?P=col)$")  # e.g. dp_over_p = p / mc_p - 1
RECO_COLUMNS = frozenset(c.name for c in TRACKING.columns if not c.name.startswith(("mc", "true_")))


def decode_output(out: str) -> tuple[str, str]:
    """``(column, how)`` for a model output name; ``how`` is ``abs`` (truth + y), ``rel`` (truth * (1 + y)) or
    ``raw`` (the value itself)."""
    if m := _RELATIVE.match(out):
        return m["col"], "rel"
    if out.startswith("rel_"):
        return out[4:], "rel"
    if out.startswith("delta_"):
        return out[6:], "abs"
    if out.endswith("_residual"):
        return out[: -len("_residual")], "abs"
    if out.startswith("d") and out[1:] in RECO_COLUMNS:
        return out[1:], "abs"
    return out, "raw"


def _target_name(out: str) -> str:
    return decode_output(out)[0]


def _truth_of(batch: F.Batch, col: str, rows: torch.Tensor | None) -> torch.Tensor:
    for cand in (f"true_{col}", f"mc_{col}"):
        if cand in batch.columns or cand in F.DERIVED:
            v = batch.f32(cand)
            return v if rows is None else v[rows]
    raise KeyError(f"true_{col}")


def _interpret(batch: F.Batch, out: str, y: torch.Tensor, rows: torch.Tensor | None) -> tuple[str, torch.Tensor]:
    """Map a model output to its analysis column (absolute values from residuals)."""
    col, how = decode_output(out)
    if how == "rel":
        return col, _truth_of(batch, col, rows) * (1.0 + y)
    if how == "abs":
        return col, _truth_of(batch, col, rows) + y
    return col, y


def _finish(batch: F.Batch, gen: torch.Generator, u_mu: torch.Tensor | None = None) -> None:
    """Post-processing shared by all stages: flags as integers (probabilities sampled), momentum from q/p."""
    if "isMuon" in batch.columns:
        v = batch.columns["isMuon"]
        ok = ~torch.isnan(v)
        frac = ((v > 0) & (v < 1)) & ok
        if bool(frac.any()):  # a probability: sample the flag
            if u_mu is None:
                u_mu = torch.rand(v.shape, generator=gen, device=v.device)
            v = torch.where(frac, (u_mu < v).float(), v)
        flag = torch.where(ok, (v > 0.5).float(), torch.zeros_like(v))
        batch.set("isMuon", flag.to(torch.int32))
        for c in ("MuonMuLL", "MuonBgLL"):
            if c in batch.columns:
                batch.set(c, torch.where(flag > 0, batch.columns[c], torch.full_like(batch.columns[c], math.nan)))
    if "qop_ClosestToBeam" in batch.columns and "p" not in batch.columns:
        batch.set("p", 1.0 / batch.columns["qop_ClosestToBeam"].abs())
    if "x_ClosestToBeam" in batch.columns and "y_ClosestToBeam" in batch.columns \
            and "z_ClosestToBeam" not in batch.columns:
        # the reconstructed line's closest approach to the beam moves along z by the residual's projection on
        # the slope (as in the reference simulation: x, y are given at the true closest-approach z)
        tx, ty = batch["true_tx_ClosestToBeam"], batch["true_ty_ClosestToBeam"]
        dx = batch.columns["x_ClosestToBeam"] - batch["true_x_ClosestToBeam"]
        dy = batch.columns["y_ClosestToBeam"] - batch["true_y_ClosestToBeam"]
        batch.set("z_ClosestToBeam", batch["true_z_ClosestToBeam"] - (dx * tx + dy * ty) / (tx * tx + ty * ty))


def batch_to_numpy(batch: F.Batch, names: Iterable[str]) -> dict:
    """The named columns as numpy arrays (int columns as int32, floats as float32)."""
    out = {}
    for n in names:
        if n not in batch.columns:
            continue
        t = batch.columns[n].detach()
        if n in INT_COLUMNS:
            t = t.to(torch.int32)
        elif t.is_floating_point():
            t = t.to(torch.float32)
        out[n] = t.cpu().numpy()
    return out
