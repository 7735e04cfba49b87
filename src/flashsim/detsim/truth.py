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
- :func:`expected_covariance`: the mean of the reported 5x5 covariance;
- :func:`true_state`: the true closest-to-beam state (what the sample's ``true_*`` columns hold);
- :func:`ghost_probability`: the exact posterior ghost probability of the ghost sample's tracks.

Inputs are mappings of contract column names to arrays (a dict, a pandas DataFrame, ...); only the generator-level
columns ``mc_{x,y,z,px,py,pz}``, ``mc_charge``, ``mcID``, ``nTracks`` are used. Computations are in float32,
as in the generation, so evaluating them on the columns read back from a file reproduces the generating values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from flashsim.detector import TRACK_TYPE_CODES, TRACK_TYPE_NAMES
from flashsim.detsim import kinematics as kin

F = np.float32
TYPE_CODES = TRACK_TYPE_CODES  # class order of track_type_probabilities: none, long, upstream, downstream
TYPE_NAMES = TRACK_TYPE_NAMES

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
SQ0 = np.array([0.0045, 0.08, 0.006], dtype=F)  # relative q/p resolution, constant term
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


def _ramp(d: np.ndarray, scale) -> np.ndarray:
    """A soft step in place: 0 for d * scale < -1/2, 1 above +1/2, linear in between (``scale`` = 1 / (4 w):
    an edge of width w is blurred over ±2 w). ``d`` is overwritten."""
    d *= scale
    d += F(0.5)
    return np.clip(d, F(0), F(1), out=d)


def _box(x, y, half_x, half_y, scale):
    """Soft probability to be inside the rectangle |x| < half_x, |y| < half_y."""
    inside = _ramp(F(half_x) - np.abs(x), scale)
    inside *= _ramp(F(half_y) - np.abs(y), scale)
    return inside


def _outside(x, y, half, scale):
    """Soft probability to be outside the square beam hole |x|, |y| < half."""
    hole = _box(x, y, half, half, scale)
    np.subtract(F(1), hole, out=hole)
    return hole


def station_probabilities(cols: Mapping | Kin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities (v, u, t) to leave enough hits in the VELO, the UT and the T stations (independent)."""
    v, u, t, _ = station_details(cols if isinstance(cols, Kin) else derive(cols))
    return v, u, t


def velo_length(k: Kin) -> np.ndarray:
    """z length (mm) of the trajectory inside the VELO's sensitive radii (may be negative: not crossed)."""
    inv_t = F(1) / k.t
    lo = np.maximum(k.zc + F(VELO_R_IN) * inv_t, k.z0)
    np.maximum(lo, F(VELO_Z_MIN), out=lo)
    hi = k.zc + F(VELO_R_OUT) * inv_t
    np.minimum(hi, F(VELO_Z_MAX), out=hi)
    hi -= lo
    return hi


def station_details(k: Kin) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(v, u, t) of :func:`station_probabilities` and the :func:`velo_length` (which sets the VELO hits)."""
    length = velo_length(k)
    v = _ramp(length - F(VELO_L_MIN), F(1 / (4 * VELO_WIDTH)))
    theta0 = F(MS_THETA) / k.p
    # UT: a plane with a beam hole, reached before the magnet; the edges blurred by multiple scattering
    dz_ut = F(Z_UT) - k.z0
    ms = theta0 * (F(Z_UT) - k.zc)
    scale = F(0.25) / np.sqrt(F(EDGE_WIDTH**2) + ms * ms)
    xu, yu = k.x0 + k.tx * dz_ut, k.y0 + k.ty * dz_ut
    u = _box(xu, yu, UT_X, UT_Y, scale)
    u *= _outside(xu, yu, UT_HOLE, scale)
    u *= _ramp(dz_ut - F(50), F(1 / 80))
    # T stations after the dipole kick: box at T3, beam hole at T1; decays and interactions on the way
    xm = k.x0 + k.tx * (F(Z_MAG) - k.z0)
    tx_t = k.q * F(PT_KICK) / k.pz
    tx_t += k.tx
    ms = theta0 * (F(Z_T3) - k.zc)
    scale = F(0.25) / np.sqrt(F(EDGE_WIDTH**2) + ms * ms)
    dz_t3 = F(Z_T3) - k.z0
    t = _box(xm + tx_t * F(Z_T3 - Z_MAG), k.y0 + k.ty * dz_t3, T_X, T_Y, scale)
    t *= _outside(xm + tx_t * F(Z_T1 - Z_MAG), k.y0 + k.ty * (F(Z_T1) - k.z0), T_HOLE, scale)
    path = dz_t3 * np.sqrt(F(1) + k.t * k.t)
    path *= MASS_OVER_CTAU[k.species]
    path /= k.p
    t *= np.exp(-path)
    t *= HADRONIC_SURVIVAL[k.species]
    t *= _ramp(dz_t3 - F(Z_T3 - Z_T1 + 300), F(1 / 200))
    return v, u, t, length


def acceptance_probability(cols: Mapping | Kin) -> np.ndarray:
    """P(acceptance = 1): at least two of VELO, UT and T stations crossed."""
    v, u, t = station_probabilities(cols)
    return acceptance_fromstation_details(v, u, t)


def acceptance_fromstation_details(v: np.ndarray, u: np.ndarray, t: np.ndarray) -> np.ndarray:
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


# --- ghost tracks -----------------------------------------------------------------------------------------------
# Ghost sample model: event occupancy and eta are drawn first; the class (ghost or real) from a prior that rises
# with occupancy and towards the acceptance edges; then every other feature from a class-conditional distribution
# with a closed-form density. The true ghost probability is the exact Bayes posterior P(ghost | the 17 features).
GHOST_PRIOR = (-2.4, 0.006, 0.5)  # logit = a + b * (nTracks - 100) + c * (eta - 3.5)^2
GHOST_SPECTRUM = {0: (6000.0, 2.7), 1: (4000.0, 3.0)}  # class -> (p0, index) of the momentum spectrum
GHOST_VELO_HITS = (7.0, 1.5, 0.85)  # nVeloHits = 6 + Poisson(lam), lam = (a + b * (eta - 2)) * (c if ghost)
GHOST_VELO_HOLES = (0.3, 0.6)  # Poisson mean, real / ghost
GHOST_UT_EFF = (0.88, 0.72)  # nUTHits ~ Binomial(4, .)
GHOST_FT_EFF = (0.85, 0.72)  # nFTHits = 9 + Binomial(3, .)
GHOST_FT_HOLES = (0.2, 0.4)
GHOST_VELO_CHI2_SCALE = (1.0, 1.15)  # veloChi2PerDoF ~ Gamma(veloNDoF / 2, scale * 2 / veloNDoF)
GHOST_T_CHI2_SCALE = (1.0, 1.3)
GHOST_MATCH_THETA = (1.2, 3.0)  # matchChi2 ~ Gamma(2, theta); real: theta * (1 + 3 GeV/p) (scattering)


def ghost_velo_lambda(eta: np.ndarray, ghost: np.ndarray | bool) -> np.ndarray:
    a, b, c = GHOST_VELO_HITS
    lam = a + b * (np.asarray(eta, dtype=np.float64) - 2.0)
    return np.maximum(lam, 1.0) * np.where(ghost, c, 1.0)


def ghost_match_theta(p: np.ndarray, ghost: np.ndarray | bool) -> np.ndarray:
    """Scale of the matchChi2 Gamma(2, theta): multiple scattering raises it for real low-momentum tracks."""
    real = GHOST_MATCH_THETA[0] * (1.0 + 3000.0 / np.asarray(p, dtype=np.float64))
    return np.where(ghost, GHOST_MATCH_THETA[1], real)


def ghost_prior_logit(n_tracks: np.ndarray, eta: np.ndarray) -> np.ndarray:
    a, b, c = GHOST_PRIOR
    return a + b * (np.asarray(n_tracks, np.float64) - 100.0) + c * (np.asarray(eta, np.float64) - 3.5) ** 2


def ghost_log_odds(cols: Mapping) -> np.ndarray:
    """Exact log posterior odds log P(ghost | features) / P(real | features) of the ghost sample (float64)."""
    g = {name: np.asarray(cols[name], dtype=np.float64) for name in
         ("nTracks", "eta", "p", "nVeloHits", "nVeloHoles", "nUTHits", "nFTHits", "nFTHoles",
          "veloChi2PerDoF", "veloNDoF", "TChi2PerDoF", "TNDoF", "matchChi2")}
    out = ghost_prior_logit(g["nTracks"], g["eta"])
    out += kin.momentum_log_pdf(g["p"], *GHOST_SPECTRUM[1]) - kin.momentum_log_pdf(g["p"], *GHOST_SPECTRUM[0])
    lam0, lam1 = ghost_velo_lambda(g["eta"], False), ghost_velo_lambda(g["eta"], True)
    out += _poisson_llr(g["nVeloHits"] - 6, lam1, lam0) + _poisson_llr(g["nVeloHoles"], *GHOST_VELO_HOLES[::-1])
    out += _poisson_llr(g["nFTHoles"], *GHOST_FT_HOLES[::-1])
    out += _binomial_llr(g["nUTHits"], 4, *GHOST_UT_EFF[::-1]) + _binomial_llr(g["nFTHits"] - 9, 3, *GHOST_FT_EFF[::-1])
    for x, ndof, (s0, s1) in ((g["veloChi2PerDoF"], g["veloNDoF"], GHOST_VELO_CHI2_SCALE),
                              (g["TChi2PerDoF"], g["TNDoF"], GHOST_T_CHI2_SCALE)):
        out += _gamma_llr(x, ndof / 2, s1 * 2 / ndof, s0 * 2 / ndof)
    out += _gamma_llr(g["matchChi2"], 2.0, GHOST_MATCH_THETA[1], ghost_match_theta(g["p"], False))
    return out


def ghost_probability(cols: Mapping) -> np.ndarray:
    """True ghost probability of each track of the ghost sample, from its 17 features (float64)."""
    return 1.0 / (1.0 + np.exp(-ghost_log_odds(cols)))


def _poisson_llr(k, lam1, lam0):
    return k * np.log(lam1 / lam0) - (lam1 - lam0)


def _binomial_llr(k, n, q1, q0):
    return k * np.log(q1 / q0) + (n - k) * np.log((1 - q1) / (1 - q0))


def _gamma_llr(x, shape, theta1, theta0):
    return -x * (1 / theta1 - 1 / theta0) - shape * np.log(theta1 / theta0)


def expected_covariance(cols: Mapping | Kin, track_type: np.ndarray | int) -> np.ndarray:
    """(n, 5, 5) mean of the reported closest-to-beam covariance (x, y, tx, ty, q/p) for a track type:
    E[h^2] D R R^T D (the per-track reported matrix is h^2 D R R^T D, h the log-normal hit quality)."""
    k = cols if isinstance(cols, Kin) else derive(cols)
    par = resolution_parameters(k, track_type)
    d = np.stack([par[f"sigma_{v}"] for v in STATE_VARS], axis=1).astype(np.float64)
    r = par["R"].astype(np.float64)
    corr = r @ np.swapaxes(r, 1, 2)
    return np.exp(2 * QUALITY_SIGMA**2) * corr * d[:, :, None] * d[:, None, :]
