"""Analysis-level quantities of the Lb0 -> Lc+ mu- nu (Lc+ -> p K- pi+) signal sample, for any sample that
follows the signal contract (the reference detector simulation or the flash simulation of the same events).

- candidates: the four tracks of each decay (``evtNumber``, ``signal_role`` 1 p, 2 K, 3 pi, 4 mu), required to be
  reconstructed with the selected track types; the Lc+ mass from (p, K, pi) and the visible Lb0 mass from
  (p, K, pi, mu) with the PDG mass hypotheses and the reconstructed momenta;
- impact parameters of each reconstructed track w.r.t. its event's primary vertex (3D distance of the
  reconstructed line) and their chi2 from the reported covariance of (x, y, tx, ty), transported to the PV;
- PID cut efficiencies (``VAR OP VALUE``) per species in bins of momentum, with binomial errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashsim.validation.cuts import parse_cut, passes

MASS = {1: 938.27208816, 2: 493.677, 3: 139.57039, 4: 105.6583755}  # MeV/c^2 per signal_role
ROLE_SPECIES = {1: "p", 2: "K", 3: "pi", 4: "mu"}
SPECIES_ROLE = {v: k for k, v in ROLE_SPECIES.items()}


def momenta(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Reconstructed (px, py, pz) [N, 3] from p and the closest-to-beam slopes (NaN where not reconstructed)."""
    tx, ty, p = (np.asarray(cols[k], np.float64) for k in ("tx_ClosestToBeam", "ty_ClosestToBeam", "p"))
    pz = p / np.sqrt(1.0 + tx * tx + ty * ty)
    return np.stack([tx * pz, ty * pz, pz], axis=1)


def decays(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Row indices [n_decays, 4] (roles 1-4 in order) of the complete decays in a signal-contract sample."""
    evt, role = np.asarray(cols["evtNumber"]), np.asarray(cols["signal_role"])
    order = np.lexsort((role, evt))
    evt_o, role_o = evt[order], role[order]
    starts = np.flatnonzero(np.r_[True, evt_o[1:] != evt_o[:-1]])
    counts = np.diff(np.r_[starts, len(evt_o)])
    full = starts[counts == 4]
    idx = full[:, None] + np.arange(4)[None, :]
    ok = np.all(role_o[idx] == np.arange(1, 5)[None, :], axis=1)
    return order[idx[ok]]


def invariant_mass(p3: list[np.ndarray], masses: list[float]) -> np.ndarray:
    e = sum(np.sqrt(np.sum(p * p, axis=1) + m * m) for p, m in zip(p3, masses, strict=True))
    p = sum(p3)
    return np.sqrt(np.maximum(e * e - np.sum(p * p, axis=1), 0.0))


@dataclass
class Candidates:
    """Per reconstructed decay: the Lc+ and visible Lb0 masses (MeV/c^2) and the gen-level Lb momentum."""

    m_lc: np.ndarray
    m_lb_visible: np.ndarray
    rows: np.ndarray  # [n, 4] row indices of the tracks
    n_decays: int  # complete decays in the sample (before requiring reconstruction)


def candidates(cols: dict[str, np.ndarray], track_types: tuple[int, ...] = (3,)) -> Candidates:
    rows = decays(cols)
    t = np.asarray(cols["type"])[rows]
    ok = np.all(np.isin(t, track_types), axis=1)
    sel = rows[ok]
    p3 = momenta(cols)
    parts = [p3[sel[:, j]] for j in range(4)]
    m_lc = invariant_mass(parts[:3], [MASS[1], MASS[2], MASS[3]])
    m_lb = invariant_mass(parts, [MASS[1], MASS[2], MASS[3], MASS[4]])
    return Candidates(m_lc, m_lb, sel, len(rows))


def impact_parameters(cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(IP [mm], IP chi2) of every row w.r.t. its PV; NaN where not reconstructed (chi2 NaN without covariance)."""
    g = {k: np.asarray(cols[k], np.float64) for k in ("x_ClosestToBeam", "y_ClosestToBeam", "z_ClosestToBeam",
                                                      "tx_ClosestToBeam", "ty_ClosestToBeam", "pv_x", "pv_y",
                                                      "pv_z")}
    a = np.stack([g["x_ClosestToBeam"], g["y_ClosestToBeam"], g["z_ClosestToBeam"]], 1)
    u = np.stack([g["tx_ClosestToBeam"], g["ty_ClosestToBeam"], np.ones_like(g["pv_z"])], 1)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.stack([g["pv_x"], g["pv_y"], g["pv_z"]], 1) - a
    perp = w - np.sum(w * u, axis=1, keepdims=True) * u
    ip = np.linalg.norm(perp, axis=1)
    # chi2 in the transverse plane at the PV's z, covariance of (x, y, tx, ty) transported along the line
    dz = g["pv_z"] - g["z_ClosestToBeam"]
    d = np.stack([g["x_ClosestToBeam"] + g["tx_ClosestToBeam"] * dz - g["pv_x"],
                  g["y_ClosestToBeam"] + g["ty_ClosestToBeam"] * dz - g["pv_y"]], 1)
    names = [f"cov_ClosestToBeam_{i}_{j}" for i in range(4) for j in range(i, 4)]
    if not all(n in cols for n in names):
        return ip, np.full_like(ip, np.nan)
    c = np.zeros((len(ip), 4, 4))
    for i in range(4):
        for j in range(i, 4):
            c[:, i, j] = c[:, j, i] = np.asarray(cols[f"cov_ClosestToBeam_{i}_{j}"], np.float64)
    jac = np.zeros((len(ip), 2, 4))
    jac[:, 0, 0] = jac[:, 1, 1] = 1.0
    jac[:, 0, 2] = jac[:, 1, 3] = dz
    c2 = jac @ c @ np.transpose(jac, (0, 2, 1))
    det = c2[:, 0, 0] * c2[:, 1, 1] - c2[:, 0, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = (d[:, 0] ** 2 * c2[:, 1, 1] - 2 * d[:, 0] * d[:, 1] * c2[:, 0, 1] + d[:, 1] ** 2 * c2[:, 0, 0]) / det
    chi2[~(det > 0)] = np.nan
    return ip, chi2


def cut_efficiency(cols: dict[str, np.ndarray], rows: np.ndarray, cut: str, p_edges: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(efficiency, error, counts) of ``cut`` in bins of reconstructed momentum for ``rows``."""
    passed = passes(np.asarray(cols[parse_cut(cut)[0]], np.float64)[rows], cut)
    p = np.asarray(cols["p"], np.float64)[rows]
    b = np.digitize(p, p_edges) - 1
    nb = len(p_edges) - 1
    inside = (b >= 0) & (b < nb)
    n = np.bincount(b[inside], minlength=nb).astype(float)
    k = np.bincount(b[inside], weights=passed[inside].astype(float), minlength=nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = k / n
        err = np.sqrt(np.maximum(eff * (1 - eff), 1.0 / np.maximum(n, 1)) / n)  # never zero for 0% / 100%
    return eff, err, n


def pid_rows(cols: dict[str, np.ndarray], species: str, track_types: tuple[int, ...]) -> np.ndarray:
    """Rows of reconstructed signal tracks of ``species`` (by their role in the decay)."""
    role = np.asarray(cols["signal_role"])
    return np.flatnonzero((role == SPECIES_ROLE[species]) & np.isin(np.asarray(cols["type"]), track_types))
