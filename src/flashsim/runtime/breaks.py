"""Deliberately broken flash samples, to calibrate the physics-check gates (``flashsim physics-check --break``).

Each variant perturbs a flash-simulated signal sample (signal-contract columns) the way a wrong chain would:

- ``blind_pid``: condition-blind PID. The PID columns of each species' reconstructed tracks are permuted among
  those tracks, so their marginal distribution is kept and every dependence on momentum, pseudorapidity and
  occupancy is lost (what a PID model that ignores its conditions gives).
- ``wide_resolution``: the momentum and slope residuals w.r.t. the generated truth widened by 30 %.
- ``ismuon_shift``: the isMuon response (and the muon likelihoods that go with it) of the muons shifted by
  +1 GeV/c in momentum: each muon takes the response of the muon whose momentum is closest to ``p - 1 GeV/c``,
  so the turn-on moves 1 GeV/c up.

A gate that none of these fails does not test the chain.
"""

from __future__ import annotations

import numpy as np

from flashsim.runtime.physics import SPECIES_ROLE

PID_COLUMNS = ("isMuon", "MuonMuLL", "MuonBgLL", "RichDLLe", "RichDLLmu", "RichDLLk", "RichDLLp", "PIDe", "PIDmu",
               "PIDK", "PIDp", "ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp")
MUON_COLUMNS = ("isMuon", "MuonMuLL", "MuonBgLL")
WIDEN = 1.3  # wide_resolution: factor on the residuals
SHIFT = 1000.0  # ismuon_shift: MeV/c


def _reconstructed(cols: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(cols["type"]) > 0


def blind_pid(cols: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = dict(cols)
    role = np.asarray(cols["signal_role"])
    names = [c for c in PID_COLUMNS if c in cols]
    for r in SPECIES_ROLE.values():
        rows = np.flatnonzero((role == r) & _reconstructed(cols))
        perm = rows[rng.permutation(len(rows))]
        for c in names:
            v = np.array(out[c], copy=True)
            v[rows] = np.asarray(cols[c])[perm]
            out[c] = v
    return out


def wide_resolution(cols: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = dict(cols)
    ok = _reconstructed(cols)
    px, py, pz = (np.asarray(cols[k], np.float64) for k in ("mc_px", "mc_py", "mc_pz"))
    truth = {"p": np.sqrt(px * px + py * py + pz * pz), "tx_ClosestToBeam": px / pz, "ty_ClosestToBeam": py / pz}
    for c, t in truth.items():
        v = np.asarray(cols[c], np.float64)
        out[c] = np.where(ok, t + WIDEN * (v - t), v).astype(np.asarray(cols[c]).dtype)
    return out


def ismuon_shift(cols: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = dict(cols)
    if "isMuon" not in cols:
        return out
    rows = np.flatnonzero((np.asarray(cols["signal_role"]) == SPECIES_ROLE["mu"]) & _reconstructed(cols))
    p = np.asarray(cols["p"], np.float64)[rows]
    order = np.argsort(p)
    ps = p[order]
    j = np.clip(np.searchsorted(ps, p - SHIFT), 0, len(ps) - 1)
    left = np.clip(j - 1, 0, len(ps) - 1)
    j = np.where(np.abs(ps[left] - (p - SHIFT)) < np.abs(ps[j] - (p - SHIFT)), left, j)
    src = rows[order[j]]
    for c in MUON_COLUMNS:
        if c in cols:
            v = np.array(cols[c], copy=True)
            v[rows] = np.asarray(cols[c])[src]
            out[c] = v
    return out


BREAKS = {"blind_pid": blind_pid, "wide_resolution": wide_resolution, "ismuon_shift": ismuon_shift}


def apply(cols: dict[str, np.ndarray], kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The sample broken the ``kind`` way (a new dict; ``cols`` is not modified)."""
    if kind not in BREAKS:
        raise ValueError(f"unknown break {kind!r}; known: {', '.join(BREAKS)}")
    return BREAKS[kind](cols, np.random.default_rng(seed))
