"""The reference detector's known truth: callable functions of generator-level contract columns.

The tracking response (:mod:`flashsim.detsim.tracking`) samples from exactly these functions, so a model
trained on the generated sample can be compared with the true probabilities and resolutions:

- :func:`station_probabilities`: probability that the particle leaves hits in the VELO, the UT and the T
  stations (smooth geometry: detector planes with beam holes, a thin-lens dipole kick ``q * 1.2 GeV/c``,
  multiple-scattering blur of the edges ~1/p, decays in flight and hadronic interactions before the T stations);
- :func:`acceptance_probability`: at least two of the three tracking systems are crossed;
- :func:`track_type_probabilities`: (n, 4) probabilities of [none, long, upstream, downstream] (contract codes
  0, 3, 4, 5), unconditional or given acceptance (``given_acceptance=True``);
- :func:`resolution_parameters`, :func:`residual_mean`, :func:`residual_std`: the residual model of the
  closest-to-beam state (x, y, tx, ty, q/p): a Gaussian core (multiple scattering ~1/p ⊕ a constant term, with
  a per-track log-normal hit-quality factor and correlations), a wide component (hard scatters) whose fraction
  grows at low momentum, and bremsstrahlung for electrons (q/p pulled away from zero);
- :func:`true_state`: the true closest-to-beam state (what the sample's ``true_*`` columns hold).

Inputs are mappings of contract column names to arrays (a dict, a pandas DataFrame, ...); only the generator-level
columns ``mc_{x,y,z,px,py,pz}``, ``mc_charge``, ``mcID``, ``nTracks`` are used. Computations are in float32,
as in the generation, so evaluating them on the columns read back from a file reproduces the generating values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from flashsim.detsim import kinematics as kin

F = np.float32
TYPE_CODES = (0, 3, 4, 5)  # class order of track_type_probabilities: none, long, upstream, downstream
TYPE_NAMES = ("none", "long", "upstream", "downstream")

# --- geometry (mm) ---------------------------------------------------------------------------------------------
VELO_R_IN, VELO_R_OUT = 8.2, 42.0  # sensitive radii
VELO_Z_MIN, VELO_Z_MAX = -175.0, 750.0
VELO_L_MIN, VELO_WIDTH = 90.0, 15.0  # z length inside the sensitive radii for >= 3 stations; edge softness
Z_UT, UT_X, UT_Y, UT_HOLE = 2485.0, 790.0, 670.0, 30.0
Z_MAG, PT_KICK = 5300.0, 1200.0  # thin-lens dipole: Δpx = q * PT_KICK (MeV/c)
Z_T1, Z_T3, T_X, T_Y, T_HOLE = 7800.0, 9400.0, 3000.0, 2500.0, 70.0
EDGE_WIDTH = 2.0  # mm, constant blur of every edge (alignment, dead zones)
MS_THETA = 6.0  # MeV/c * rad: multiple-scattering angle θ0 = MS_THETA / p in the VELO + RF foil
HADRONIC_SURVIVAL = np.array([0.97, 1.0, 0.93, 0.94, 0.91], dtype=F)  # e (showering), mu, pi, K, p
MASS_OVER_CTAU = (kin.MASS / kin.CTAU).astype(F)  # for decays in flight: P = exp(-L * m / (p * ctau))

# --- reconstruction efficiencies given the stations crossed ---------------------------------------------------
EFF_LONG, EFF_UP, EFF_DOWN = 0.975, 0.85, 0.80
OCC_LONG, OCC_UP, OCC_DOWN = 0.03, 0.04, 0.05  # relative loss per 100 tracks in the event
ELECTRON_LONG_EFF = 0.92  # extra factor for electrons (bremsstrahlung kinks)

# --- resolution, per reconstructed type [long, upstream, downstream] --------------------------------------------
SX0 = np.array([0.010, 0.012, 0.60], dtype=F)  # mm, constant term of x, y
SX1 = np.array([40.0, 40.0, 2500.0], dtype=F)  # mm * MeV/c, multiple-scattering term / p
ST0 = np.array([4e-5, 6e-5, 3e-4], dtype=F)  # slope constant term
ST1 = np.array([0.9, 1.0, 2.0], dtype=F)  # MeV/c, slope multiple-scattering term / p
SQ0 = np.array([0.0045, 0.12, 0.006], dtype=F)  # relative q/p resolution, constant term
SQ1 = np.array([4.5e-8, 2e-7, 6e-8], dtype=F)  # relative q/p resolution term ∝ p (per MeV/c)
RHO_XT = np.array([-0.5, -0.5, -0.85], dtype=F)  # correlation position-slope in each view
RHO_TQ = np.array([0.2, 0.5, 0.5], dtype=F)  # correlation slope-(q/p) (times the charge)
QUALITY_SIGMA = 0.2  # per-track hit-quality factor h = exp(QUALITY_SIGMA * N(0, 1)) scales the core
TAIL_FRACTION0, TAIL_FRACTION1, TAIL_P = 0.02, 0.06, 8000.0  # f_tail = f0 + f1 * exp(-(p - 2 GeV) / TAIL_P)
TAIL_SCALE = 3.0  # the wide component's width relative to the core
BREM_PROB, BREM_MEAN = 0.5, 0.06  # electrons: q/p *= exp(b), b ~ Exponential(BREM_MEAN) with BREM_PROB
STATE_VARS = ("x", "y", "tx", "ty", "qop")


def _col(cols: Mapping, name: str, dtype=F) -> np.ndarray:
    return np.asarray(cols[name], dtype=dtype)


@dataclass
class Kin:
    """Derived generator-level quantities (float32)."""

    x0: np.ndarray
    y0: np.ndarray
    z0: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    p: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    t: np.ndarray  # |slope|
    q: np.ndarray  # charge (float32)
    species: np.ndarray
    n_tracks: np.ndarray  # float32
    zc: np.ndarray  # z of closest approach to the beam line (x = y = 0)


def derive(cols: Mapping) -> Kin:
    """Derived quantities from the generator-level columns (shared by every truth function)."""
    x0, y0, z0 = _col(cols, "mc_x"), _col(cols, "mc_y"), _col(cols, "mc_z")
    px, py, pz = _col(cols, "mc_px"), _col(cols, "mc_py"), _col(cols, "mc_pz")
    p = np.sqrt(px * px + py * py + pz * pz)
    tx, ty = px / pz, py / pz
    t2 = tx * tx + ty * ty
    zc = z0 - (x0 * tx + y0 * ty) / t2
    return Kin(x0, y0, z0, px, py, pz, p, tx, ty, np.sqrt(t2), _col(cols, "mc_charge"),
               kin.species_index(np.asarray(cols["mcID"])), _col(cols, "nTracks"), zc)


def true_state(cols: Mapping | Kin) -> dict[str, np.ndarray]:
    """The true closest-to-beam state: ``true_{x,y,z,tx,ty}_ClosestToBeam`` (straight line to the beam line)."""
    k = cols if isinstance(cols, Kin) else derive(cols)
    dz = k.zc - k.z0
    return {"true_x_ClosestToBeam": k.x0 + k.tx * dz, "true_y_ClosestToBeam": k.y0 + k.ty * dz,
            "true_z_ClosestToBeam": k.zc, "true_tx_ClosestToBeam": k.tx, "true_ty_ClosestToBeam": k.ty}


def logistic(x: np.ndarray) -> np.ndarray:
    """Logistic function (float32, via tanh)."""
    return F(0.5) * np.tanh(F(0.5) * x) + F(0.5)


def _edge(x: np.ndarray) -> np.ndarray:
    """A soft step: 0 below -2, 1 above +2, a cubic smoothstep in between (x in units of the edge width)."""
    y = np.clip(F(0.5) + F(0.25) * x, F(0), F(1))
    return y * y * (F(3) - F(2) * y)


def _box(x, y, half_x, half_y, w):
    """Soft probability to be inside the rectangle |x| < half_x, |y| < half_y (edge width w)."""
    inv_w = F(1) / w
    return _edge((F(half_x) - np.abs(x)) * inv_w) * _edge((F(half_y) - np.abs(y)) * inv_w)


def station_probabilities(cols: Mapping | Kin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities (v, u, t) to leave enough hits in the VELO, the UT and the T stations (independent)."""
    k = cols if isinstance(cols, Kin) else derive(cols)
    inv_t = F(1) / k.t
    # VELO: z length of the trajectory inside the sensitive radii, at least VELO_L_MIN
    lo = np.maximum(np.maximum(k.z0, k.zc + F(VELO_R_IN) * inv_t), F(VELO_Z_MIN))
    hi = np.minimum(k.zc + F(VELO_R_OUT) * inv_t, F(VELO_Z_MAX))
    v = _edge((hi - lo - F(VELO_L_MIN)) * F(1 / VELO_WIDTH))
    theta0 = F(MS_THETA) / k.p
    # UT: a plane with a beam hole, reached before the magnet
    lever = F(Z_UT) - k.zc
    w = np.sqrt(F(EDGE_WIDTH**2) + (theta0 * lever) ** 2)
    xu, yu = k.x0 + k.tx * (F(Z_UT) - k.z0), k.y0 + k.ty * (F(Z_UT) - k.z0)
    u = (_box(xu, yu, UT_X, UT_Y, w) * (F(1) - _box(xu, yu, UT_HOLE, UT_HOLE, w))
         * _edge((F(Z_UT - 50) - k.z0) * F(1 / 20)))
    # T stations after the dipole kick: box at T3, beam hole at T1; decays and interactions on the way
    xm = k.x0 + k.tx * (F(Z_MAG) - k.z0)
    tx_t = k.tx + k.q * F(PT_KICK) / k.pz
    w = np.sqrt(F(EDGE_WIDTH**2) + (theta0 * (F(Z_T3) - k.zc)) ** 2)
    x1, y1 = xm + tx_t * F(Z_T1 - Z_MAG), k.y0 + k.ty * (F(Z_T1) - k.z0)
    x3, y3 = xm + tx_t * F(Z_T3 - Z_MAG), k.y0 + k.ty * (F(Z_T3) - k.z0)
    path = (F(Z_T3) - k.z0) * np.sqrt(F(1) + k.t * k.t)
    survive = HADRONIC_SURVIVAL[k.species] * np.exp(-path * MASS_OVER_CTAU[k.species] / k.p)
    t = (_box(x3, y3, T_X, T_Y, w) * (F(1) - _box(x1, y1, T_HOLE, T_HOLE, w)) * survive
         * _edge((F(Z_T1 - 300) - k.z0) * F(1 / 50)))
    return v, u, t


def acceptance_probability(cols: Mapping | Kin) -> np.ndarray:
    """P(acceptance = 1): at least two of VELO, UT and T stations crossed."""
    v, u, t = station_probabilities(cols)
    return v * u + v * t + u * t - F(2) * v * u * t


def reconstruction_efficiencies(cols: Mapping | Kin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Efficiencies (long, upstream, downstream) of each pattern recognition given its stations were crossed.

    They fall at low momentum, large slope and high occupancy (``nTracks``).
    """
    k = cols if isinstance(cols, Kin) else derive(cols)
    occ = k.n_tracks * F(0.01)
    low_p = np.exp((F(kin.P_MIN) - k.p) / F(2500))
    e_long = (F(EFF_LONG) * (F(1) - F(0.25) * low_p) * np.maximum(F(1) - F(OCC_LONG) * occ, F(0.3))
              * (F(1) - F(0.5) * k.t * k.t) * np.where(k.species == 0, F(ELECTRON_LONG_EFF), F(1)))
    e_up = F(EFF_UP) * np.maximum(F(1) - F(OCC_UP) * occ, F(0.3)) * (F(1) - F(0.3) * k.t * k.t)
    e_down = (F(EFF_DOWN) * (F(1) - F(0.4) * np.exp((F(kin.P_MIN) - k.p) / F(6000)))
              * np.maximum(F(1) - F(OCC_DOWN) * occ, F(0.3)))
    return e_long, e_up, e_down


def track_type_probabilities(cols: Mapping | Kin, given_acceptance: bool = False) -> np.ndarray:
    """(n, 4) probabilities of the track type in class order [none, long, upstream, downstream].

    Long needs VELO and T hits, upstream VELO and UT, downstream UT and T; a particle failing the long
    pattern recognition is tried as upstream, then as downstream. With ``given_acceptance`` the probabilities
    are conditional on ``acceptance == 1`` (the efficiency model's target).
    """
    k = cols if isinstance(cols, Kin) else derive(cols)
    v, u, t = station_probabilities(k)
    e_l, e_u, e_d = reconstruction_efficiencies(k)
    p_long = e_l * v * t
    p_up = e_u * v * u * (F(1) - e_l * t)
    p_down = e_d * u * t * ((F(1) - v) + v * (F(1) - e_l) * (F(1) - e_u))
    out = np.stack([np.zeros_like(p_long), p_long, p_up, p_down], axis=1)
    if given_acceptance:
        acc = v * u + v * t + u * t - F(2) * v * u * t
        out /= np.maximum(acc, F(1e-12))[:, None]
    out[:, 0] = np.clip(F(1) - out[:, 1:].sum(axis=1), 0, 1)
    return out


def type_index(track_type: np.ndarray) -> np.ndarray:
    """Contract type code (0, 3, 4, 5) -> class index (0 none, 1 long, 2 upstream, 3 downstream)."""
    lut = np.array([0, -1, -1, 1, 2, 3], dtype=np.int8)
    return lut[np.asarray(track_type)]


def tail_fraction(p: np.ndarray) -> np.ndarray:
    """Fraction of tracks in the wide (hard-scatter) residual component."""
    return F(TAIL_FRACTION0) + F(TAIL_FRACTION1) * np.exp((F(kin.P_MIN) - p) / F(TAIL_P))


def resolution_parameters(cols: Mapping | Kin, track_type: np.ndarray | int, correlation: bool = True
                          ) -> dict[str, np.ndarray]:
    """Core widths of the residuals of (x, y, tx, ty, q/p) at the closest-to-beam state for a track type.

    ``track_type`` is the contract code (3, 4, 5; scalar or per row). Returns ``sigma_<var>`` (before the
    per-track quality factor h), ``tail_fraction``, and the lower-triangular correlation factor ``R`` (n, 5, 5)
    with unit rows: the core residual is ``h * sigma * (R @ z)``, z standard normal.
    """
    k = cols if isinstance(cols, Kin) else derive(cols)
    j = (type_index(np.broadcast_to(np.asarray(track_type), k.p.shape)) - 1).astype(np.intp)
    if np.any(j < 0):
        raise ValueError("resolution_parameters: track_type must be 3, 4 or 5")
    return resolution_by_index(k, j, correlation)


def resolution_by_index(k: Kin, j: np.ndarray, correlation: bool) -> dict[str, np.ndarray]:
    """:func:`resolution_parameters` for type index j (0 long, 1 upstream, 2 downstream)."""
    inv_p = F(1) / k.p
    lever = F(0.5) + F(0.015) / k.t  # extrapolation distance from the first hit grows at small angles
    sx = np.sqrt(SX0[j] ** 2 + (SX1[j] * inv_p * lever) ** 2)
    st = np.sqrt(ST0[j] ** 2 + (ST1[j] * inv_p) ** 2)
    sq = np.sqrt(SQ0[j] ** 2 + (SQ1[j] * k.p) ** 2) * inv_p
    return {"sigma_x": sx, "sigma_y": sx, "sigma_tx": st, "sigma_ty": st, "sigma_qop": sq,
            "tail_fraction": tail_fraction(k.p), **({"R": correlation_factor(k, j)} if correlation else {})}


def correlation_couplings(k: Kin, j: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Off-diagonal entries (i > m) of the correlation Cholesky factor, before row normalisation."""
    s2 = F(2) * k.px * k.py / (k.px * k.px + k.py * k.py)  # sin(2 phi): stereo coupling of the views
    rxt, rtq = RHO_XT[j], RHO_TQ[j] * k.q
    return {(1, 0): F(0.25) * s2, (2, 0): rxt, (2, 1): F(0.1) * s2, (3, 0): F(0.1) * s2, (3, 1): rxt,
            (3, 2): F(0.15) * s2, (4, 0): F(0.05) * k.q, (4, 1): F(0.05) * k.q * s2, (4, 2): rtq,
            (4, 3): F(0.05) * k.q * s2}


def correlation_factor(k: Kin, j: np.ndarray) -> np.ndarray:
    """(n, 5, 5) lower-triangular R with unit rows (R @ R.T is the correlation matrix)."""
    c = correlation_couplings(k, j)
    R = np.zeros((len(k.p), 5, 5), dtype=F)
    for (a, b), val in c.items():
        R[:, a, b] = val
    R[:, np.arange(5), np.arange(5)] = np.sqrt(F(1) - np.sum(R * R, axis=2))
    return R


def _brem_moments() -> tuple[float, float]:
    """E[F] and E[F^2] of the electron q/p factor F = exp(b) (b = 0 without bremsstrahlung)."""
    m1 = 1 - BREM_PROB + BREM_PROB / (1 - BREM_MEAN)
    m2 = 1 - BREM_PROB + BREM_PROB / (1 - 2 * BREM_MEAN)
    return m1, m2


def residual_mean(cols: Mapping | Kin, track_type: np.ndarray | int) -> dict[str, np.ndarray]:
    """True mean of (reco - true) for x, y, tx, ty and q/p (only electrons' q/p is biased, by bremsstrahlung)."""
    k = cols if isinstance(cols, Kin) else derive(cols)
    zero = np.zeros_like(k.p)
    m1, _ = _brem_moments()
    qop = k.q / k.p
    return {"x": zero, "y": zero, "tx": zero, "ty": zero,
            "qop": np.where(k.species == 0, qop * F(m1 - 1), zero)}


def residual_std(cols: Mapping | Kin, track_type: np.ndarray | int) -> dict[str, np.ndarray]:
    """True standard deviation of (reco - true) for x, y, tx, ty and q/p, tails and bremsstrahlung included."""
    k = cols if isinstance(cols, Kin) else derive(cols)
    par = resolution_parameters(k, track_type)
    f = par["tail_fraction"]
    scale = np.sqrt(F(np.exp(2 * QUALITY_SIGMA**2)) * ((F(1) - f) + f * F(TAIL_SCALE**2)))
    out = {v: par[f"sigma_{v}"] * scale for v in STATE_VARS}
    m1, m2 = _brem_moments()
    qop = k.q / k.p
    brem_var = qop * qop * F(m2 - m1 * m1)
    out["qop"] = np.where(k.species == 0, np.sqrt(out["qop"] ** 2 + brem_var), out["qop"])
    return out
