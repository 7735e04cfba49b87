"""Tracking models' columns: generator-level features and reconstruction targets derived from the contract.

Used by the acceptance (``lgbm_classifier``), efficiency (``mlp_classifier``), resolution (``generator``) and
covariance (``covariance``) entries of ``params.yaml`` through ``derive: tracking`` (see
:data:`flashsim.models.base.DERIVES`); their truth hooks are in :mod:`flashsim.validation.truth`.
Feature formulas (what a runtime computes from generated particles before calling the ONNX models):

- ``mc_p = |mc_p⃗|``, ``mc_tx = mc_px / mc_pz``, ``mc_ty = mc_py / mc_pz``, ``mc_eta = atanh(mc_pz / mc_p)``,
  ``mc_phi = atan2(mc_py, mc_px)``;
- species flags ``is_e, is_mu, is_pi, is_K, is_p`` from ``|mcID|`` (11, 13, 211, 321, 2212);
- track-type flags ``is_long, is_upstream, is_downstream`` from ``type`` (3, 4, 5) — for the resolution and
  covariance models they come from the efficiency model's sampled class.

Resolution targets: ``d{x,y,tx,ty}_ClosestToBeam = reco - true`` and ``dp_over_p = p / mc_p - 1``, plus
``chi2PerDoF``, ``nDoF``, ``ghostProb`` as they are.
"""

from __future__ import annotations

import numpy as np

from flashsim.detector import SPECIES_PDG, TRACK_TYPES
from flashsim.models.base import DERIVED_UNITS

SPECIES = {f"is_{s}": pdg for s, pdg in SPECIES_PDG.items()}  # flag column -> |mcID|
TYPES = {f"is_{t}": code for t, code in TRACK_TYPES.items() if code}  # flag column -> type code
GEN_FEATURES = ["mc_x", "mc_y", "mc_z", "mc_tx", "mc_ty", "mc_p", "mc_eta", "mc_phi", "mc_charge", *SPECIES]
RESIDUALS = ["dx_ClosestToBeam", "dy_ClosestToBeam", "dtx_ClosestToBeam", "dty_ClosestToBeam", "dp_over_p"]
COV = [f"cov_ClosestToBeam_{i}_{j}" for i in range(5) for j in range(i, 5)]

DERIVED_UNITS.update({"mc_p": "MeV/c", "mc_tx": "1", "mc_ty": "1", "mc_eta": "1", "mc_phi": "rad",
                      **dict.fromkeys(SPECIES, "1"), **dict.fromkeys(TYPES, "1"),
                      "dx_ClosestToBeam": "mm", "dy_ClosestToBeam": "mm", "dtx_ClosestToBeam": "1",
                      "dty_ClosestToBeam": "1", "dp_over_p": "1"})


def gen_features(cols) -> dict[str, np.ndarray]:
    """Generator-level derived features (float32) from contract columns (dict or DataFrame)."""
    px, py, pz = (np.asarray(cols[k], dtype=np.float64) for k in ("mc_px", "mc_py", "mc_pz"))
    p = np.sqrt(px * px + py * py + pz * pz)
    out = {"mc_p": p, "mc_tx": px / pz, "mc_ty": py / pz, "mc_eta": np.arctanh(np.clip(pz / p, -1 + 1e-12,
                                                                                         1 - 1e-12)),
           "mc_phi": np.arctan2(py, px)}
    pid = np.abs(np.asarray(cols["mcID"]))
    out.update({k: (pid == v).astype(np.float64) for k, v in SPECIES.items()})
    return {k: v.astype(np.float32) for k, v in out.items()}


def derive(df):
    """Add the features, type flags and resolution targets to a prepared tracking frame."""
    new = gen_features(df)
    if "type" in df.columns:
        t = df["type"].to_numpy()
        new.update({k: (t == v).astype(np.float32) for k, v in TYPES.items()})
    if "x_ClosestToBeam" in df.columns:
        for s in ("x", "y", "tx", "ty"):
            new[f"d{s}_ClosestToBeam"] = (df[f"{s}_ClosestToBeam"].to_numpy(np.float64)
                                          - df[f"true_{s}_ClosestToBeam"].to_numpy(np.float64)).astype(np.float32)
        new["dp_over_p"] = (df["p"].to_numpy(np.float64) / new["mc_p"].astype(np.float64) - 1).astype(np.float32)
    return df.assign(**new)

