"""An analyst's candidate tree (DecayTreeTuple-like) of the Lb0 -> Lc+ mu- nu (Lc+ -> p K- pi+) decays.

One entry per decay whose four tracks are reconstructed with the selected track types (the candidates of
:func:`flashsim.runtime.physics.candidates`). Branches are named ``<head>_<var>`` as in LHCb ntuples: heads
``Lb`` (visible: p K pi mu), ``Lc``, ``p``, ``K``, ``pi``, ``mu``; e.g. ``Lc_M``, ``Lb_M``, ``p_PIDK``,
``mu_IPCHI2_OWNPV``, ``K_TRUEID``. Undefined values (no PID response, no covariance) carry LHCb's sentinel
-1000 instead of NaN. The event number is ``eventNumber``.
"""

from __future__ import annotations

import numpy as np

from flashsim.runtime import physics

TREE = "Lb2LcMuNu/DecayTree"
SENTINEL = -1000.0
HEADS = {1: "p", 2: "K", 3: "pi", 4: "mu"}
# <var> -> the flash-simulated (or generator-level) column it comes from
TRACK_VARS = {"TRACK_Type": "type", "TRACK_CHI2NDOF": "chi2PerDoF", "TRUEID": "mcID", "TRUEP_X": "mc_px",
              "TRUEP_Y": "mc_py", "TRUEP_Z": "mc_pz", "PIDK": "PIDK", "PIDp": "PIDp", "PIDmu": "PIDmu",
              "ProbNNk": "ProbNNk", "ProbNNp": "ProbNNp", "ProbNNpi": "ProbNNpi", "ProbNNmu": "ProbNNmu",
              "isMuon": "isMuon", "RichDLLk": "RichDLLk", "RichDLLp": "RichDLLp", "MuonMuLL": "MuonMuLL"}
NEEDED = ("evtNumber", "signal_role", "type", "p", "tx_ClosestToBeam", "ty_ClosestToBeam", "x_ClosestToBeam",
          "y_ClosestToBeam", "z_ClosestToBeam", "pv_x", "pv_y", "pv_z")


def _clean(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype.kind == "f":
        return np.where(np.isfinite(v), v, SENTINEL).astype(np.float32)
    return v


def _kinematics(out: dict, head: str, p3: np.ndarray, mass: np.ndarray | None = None) -> None:
    p = np.linalg.norm(p3, axis=1)
    pt = np.hypot(p3[:, 0], p3[:, 1])
    out[f"{head}_P"], out[f"{head}_PT"] = p, pt
    out[f"{head}_PX"], out[f"{head}_PY"], out[f"{head}_PZ"] = p3[:, 0], p3[:, 1], p3[:, 2]
    out[f"{head}_ETA"] = np.arcsinh(p3[:, 2] / pt)
    if mass is not None:
        out[f"{head}_M"] = mass


def candidate_tree(cols: dict[str, np.ndarray], track_types: tuple[int, ...] = (3,)) -> dict[str, np.ndarray]:
    """The candidate branches of a signal-contract sample (columns of ``flashsim simulate``'s output)."""
    if not all(c in cols for c in NEEDED):
        return {}
    cand = physics.candidates(cols, track_types)
    rows = cand.rows
    ip, ipchi2 = physics.impact_parameters(cols)
    p3 = physics.momenta(cols)
    out: dict[str, np.ndarray] = {"eventNumber": np.asarray(cols["evtNumber"])[rows[:, 0]].astype(np.int64)}
    parts = [p3[rows[:, j]] for j in range(4)]
    _kinematics(out, "Lb", sum(parts), cand.m_lb_visible)
    _kinematics(out, "Lc", sum(parts[:3]), cand.m_lc)
    for role, head in HEADS.items():
        r = rows[:, role - 1]
        _kinematics(out, head, parts[role - 1])
        out[f"{head}_IP_OWNPV"] = ip[r]
        out[f"{head}_IPCHI2_OWNPV"] = ipchi2[r]
        for var, col in TRACK_VARS.items():
            if col in cols:
                out[f"{head}_{var}"] = np.asarray(cols[col])[r]
    return {k: _clean(v) for k, v in out.items()}
