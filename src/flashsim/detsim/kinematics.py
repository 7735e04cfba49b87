"""Generator level: pp collisions, event occupancy and charged particles (units MeV, MeV/c, mm).

Everything is vectorized numpy drawing from one ``np.random.Generator``; float columns are float32.
Shared by every sample kind (tracking, signal, ghost, and the other helpers' kinds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashsim import detector

# --- species ---------------------------------------------------------------------------------------------------
SPECIES = detector.SPECIES
PDG = np.array([detector.SPECIES_PDG[s] for s in SPECIES], dtype=np.int32)  # of the negative lepton / positive hadron
MASS = np.array([0.51099895, 105.6583755, 139.57039, 493.677, 938.27208816])  # MeV/c^2
CTAU = np.array([np.inf, 658_654.0, 7_804.5, 3_711.0, np.inf])  # mm (mean proper decay length)
LEPTON = np.array([True, True, False, False, False])
# relative abundance of charged particles with 2 < p < 200 GeV/c, 1.5 < eta < 5.5 (tracking sample)
FRACTIONS = np.array([0.03, 0.03, 0.72, 0.14, 0.08])
# momentum spectrum per species: pdf ∝ (1 + p/P0)^-INDEX on [P_MIN, P_MAX]; heavier hadrons are harder
SPECTRUM_P0 = np.array([5000.0, 6000.0, 6000.0, 8000.0, 10000.0])  # MeV/c
SPECTRUM_INDEX = np.array([2.9, 2.6, 2.7, 2.7, 2.7])

P_MIN, P_MAX = 2_000.0, 200_000.0  # MeV/c
ETA_MIN, ETA_MAX = 1.5, 5.5

# abs(PDG id) -> species index (-1 for anything else)
_SPECIES_OF_ABS_PDG = np.full(int(PDG.max()) + 1, -1, dtype=np.int8)
_SPECIES_OF_ABS_PDG[PDG] = np.arange(len(PDG))

# --- collisions ------------------------------------------------------------------------------------------------
BEAMSPOT_XY = 0.040  # mm, transverse luminous-region width
BEAMSPOT_Z = 45.0  # mm, longitudinal luminous-region width
MU_EXTRA_PV = 0.7  # nPVs = 1 + Poisson(MU_EXTRA_PV)
TRACKS_PER_PV_SHAPE, TRACKS_PER_PV_SCALE = 2.4, 28.0  # nTracks ~ Gamma(shape * nPVs, scale)
STORED_FRACTION = 0.3  # generated particles stored per event ~ 1 + Poisson(STORED_FRACTION * nTracks)
# secondaries: fraction, mean flight (mm, along the direction of flight, in z)
SECONDARY_HF = (0.04, 3.0)  # heavy-flavour decays (displaced by ~mm)
SECONDARY_V0 = (0.05, 400.0)  # strange V0 decays (K0S, Lambda: up to metres, the downstream tracks)


def species_index(pdg_id: np.ndarray) -> np.ndarray:
    """Index into :data:`SPECIES` for PDG ids (``-1`` for unknown particles)."""
    a = np.abs(np.asarray(pdg_id))
    top = len(_SPECIES_OF_ABS_PDG) - 1
    return np.where(a <= top, _SPECIES_OF_ABS_PDG[np.minimum(a, top)], -1).astype(np.int8)


def pdg_id(species: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Signed PDG id: hadrons carry the charge's sign, negative leptons have positive ids (e- = 11)."""
    sign = np.where(LEPTON[species], -charge, charge)
    return (PDG[species] * sign).astype(np.int32)


def charge_of(pdg: np.ndarray) -> np.ndarray:
    """Electric charge (+1/-1) of the charged species' signed PDG ids."""
    s = species_index(pdg)
    return (np.sign(pdg) * np.where(LEPTON[s], -1, 1)).astype(np.int32)


def mass_of(pdg: np.ndarray) -> np.ndarray:
    return MASS[species_index(pdg)]


def sample_species(rng: np.random.Generator, n: int, fractions: np.ndarray = FRACTIONS) -> np.ndarray:
    """Species indices drawn with the given relative abundances."""
    return species_from_uniform(rng.random(n, dtype=np.float32), fractions)


def momentum_from_uniform(u: np.ndarray, p0: np.ndarray | float, index: np.ndarray | float,
                          p_min: float = P_MIN, p_max: float = P_MAX) -> np.ndarray:
    """Inverse CDF of the falling spectrum pdf(p) ∝ (1 + p/p0)^-index on [p_min, p_max] (MeV/c)."""
    k = 1.0 - np.asarray(index, dtype=np.float64)
    p0 = np.asarray(p0, dtype=np.float64)
    a = (1.0 + p_min / p0) ** k
    b = (1.0 + p_max / p0) ** k
    return p0 * ((a + u * (b - a)) ** (1.0 / k) - 1.0)


# per-species constants of the inverse CDF above, for the float32 fast path
_K = 1.0 - SPECTRUM_INDEX
_A = ((1.0 + P_MIN / SPECTRUM_P0) ** _K).astype(np.float32)
_BA = ((1.0 + P_MAX / SPECTRUM_P0) ** _K).astype(np.float32) - _A
_INV_K = (1.0 / _K).astype(np.float32)
_P0 = SPECTRUM_P0.astype(np.float32)


def _species_momentum(u: np.ndarray, species: np.ndarray) -> np.ndarray:
    """float32 :func:`momentum_from_uniform` with the species' spectrum (exp/log instead of pow)."""
    base = _A[species] + u * _BA[species]
    p = _P0[species] * (np.exp(np.log(base) * _INV_K[species]) - np.float32(1))
    return np.clip(p, np.float32(P_MIN), np.float32(P_MAX))


def momentum_log_pdf(p: np.ndarray, p0: float, index: float, p_min: float = P_MIN, p_max: float = P_MAX
                     ) -> np.ndarray:
    """Log of the normalised spectrum density at ``p`` (MeV/c)."""
    k = 1.0 - index
    norm = p0 / k * ((1.0 + p_max / p0) ** k - (1.0 + p_min / p0) ** k)
    return -index * np.log1p(np.asarray(p, dtype=np.float64) / p0) - np.log(norm)


def sample_momentum(rng: np.random.Generator, species: np.ndarray) -> np.ndarray:
    """Momentum magnitude (MeV/c) from the species' falling spectrum, 2-200 GeV/c."""
    return _species_momentum(rng.random(len(species), dtype=np.float32), species)


def sample_eta(rng: np.random.Generator, n: int, eta_min: float = ETA_MIN, eta_max: float = ETA_MAX) -> np.ndarray:
    """Pseudorapidity: a trapezoid (flat in the centre, falling to the edges) on [eta_min, eta_max]."""
    u = rng.random((2, n), dtype=np.float32)
    return eta_min + (eta_max - eta_min) * (0.62 * u[0] + 0.38 * u[1])


def momentum_vector(p: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(px, py, pz) from |p|, pseudorapidity and azimuth."""
    e = np.exp(-eta)
    pt = p * (2 * e / (1 + e * e))  # p / cosh(eta)
    return pt * np.cos(phi), pt * np.sin(phi), p * ((1 - e * e) / (1 + e * e))  # p * tanh(eta)


@dataclass
class Events:
    """Per-event quantities of one chunk and the event index of each stored particle."""

    n_tracks: np.ndarray  # int32 per event
    n_pvs: np.ndarray  # int32 per event
    pv_offset: np.ndarray  # first row of the event's PVs in pv_x/y/z
    pv_x: np.ndarray
    pv_y: np.ndarray
    pv_z: np.ndarray
    particle_event: np.ndarray  # event index of each stored particle (non-decreasing)


def sample_occupancy(rng: np.random.Generator, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """Per event: number of PVs, 1 + Poisson(MU_EXTRA_PV), and the track multiplicity nTracks, a Gamma whose
    shape grows with the number of PVs (int32 arrays)."""
    npv = 1 + rng.poisson(MU_EXTRA_PV, n_events).astype(np.int32)
    ntr = np.maximum(3, rng.gamma(TRACKS_PER_PV_SHAPE * npv, TRACKS_PER_PV_SCALE)).astype(np.int32)
    return npv, ntr


def sample_pv(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PV positions (mm, float32) in the luminous region."""
    pv = rng.standard_normal((3, n), dtype=np.float32)
    return pv[0] * np.float32(BEAMSPOT_XY), pv[1] * np.float32(BEAMSPOT_XY), pv[2] * np.float32(BEAMSPOT_Z)


def sample_events(rng: np.random.Generator, n_particles: int, stored_fraction: float = STORED_FRACTION) -> Events:
    """pp collisions: nPVs, nTracks occupancy and PV positions, with enough events for ``n_particles`` particles.

    Each event stores ``1 + Poisson(stored_fraction * nTracks)`` generated particles; the last event of the chunk
    is truncated so that exactly ``n_particles`` are returned.
    """
    n_ev = max(8, int(n_particles / (1.0 + stored_fraction * 80.0) * 1.3) + 8)
    n_pvs = np.empty(0, np.int32)
    n_tracks = np.empty(0, np.int32)
    mult = np.empty(0, np.int64)
    while mult.sum() < n_particles:  # almost always one pass
        npv, ntr = sample_occupancy(rng, n_ev)
        m = 1 + rng.poisson(stored_fraction * ntr)
        n_pvs, n_tracks, mult = np.concatenate([n_pvs, npv]), np.concatenate([n_tracks, ntr]), np.concatenate([mult, m])
    cum = np.cumsum(mult)
    last = int(np.searchsorted(cum, n_particles))  # index of the event holding the last particle
    n_pvs, n_tracks, mult = n_pvs[: last + 1], n_tracks[: last + 1], mult[: last + 1].copy()
    mult[last] -= cum[last] - n_particles
    particle_event = np.repeat(np.arange(last + 1, dtype=np.int64), mult)
    pv_offset = np.concatenate([[0], np.cumsum(n_pvs)[:-1]]).astype(np.int64)
    n_pv_tot = int(n_pvs.sum())
    return Events(n_tracks, n_pvs, pv_offset, *sample_pv(rng, n_pv_tot), particle_event)


# signed PDG id by species and charge: _PDG_BY_CHARGE[species, charge > 0]
_PDG_BY_CHARGE = np.stack([pdg_id(np.arange(5), np.full(5, -1)), pdg_id(np.arange(5), np.full(5, 1))], axis=1)


def species_from_uniform(u: np.ndarray, fractions: np.ndarray = FRACTIONS) -> np.ndarray:
    """Species index from a uniform: the number of cumulative fractions below ``u`` (vectorised compares)."""
    cdf = np.cumsum(fractions / np.sum(fractions))[:-1].astype(np.float32)
    out = (u >= cdf[0]).view(np.int8).copy()
    for c in cdf[1:]:
        out += (u >= c).view(np.int8)
    return out


def generate_particles(rng: np.random.Generator, n: int, chunk_index: int, chunk_size: int,
                       fractions: np.ndarray = FRACTIONS) -> dict[str, np.ndarray]:
    """``n`` charged particles from pp collisions: the contract's generator-level columns.

    ``evtNumber`` is ``chunk_index * chunk_size + (event index in the chunk)``: unique within a file and
    computable from the chunk alone. Secondaries (heavy-flavour and V0 decay products) start displaced along
    their direction of flight.
    """
    ev = sample_events(rng, n)
    e = ev.particle_event
    u = rng.random((8, n), dtype=np.float32)  # species, charge, p, phi, PV, secondary, eta (2)
    species = species_from_uniform(u[0], fractions)
    positive = u[1] < np.float32(0.5)
    p = _species_momentum(u[2], species)
    eta = np.float32(ETA_MIN) + np.float32(ETA_MAX - ETA_MIN) * (np.float32(0.62) * u[6] + np.float32(0.38) * u[7])
    phi = np.float32(2 * np.pi) * u[3] - np.float32(np.pi)
    px, py, pz = momentum_vector(p, eta, phi)
    # origin: one of the event's PVs, displaced along the flight direction for secondaries; the secondary's
    # uniform, rescaled within its class, gives the exponential flight length
    pv_row = ev.pv_offset[e] + (u[4] * ev.n_pvs[e]).astype(np.int64)
    x, y, z = ev.pv_x[pv_row], ev.pv_y[pv_row], ev.pv_z[pv_row]
    f_hf, l_hf = SECONDARY_HF
    f_v0, l_v0 = SECONDARY_V0
    k = u[5]
    sec = np.flatnonzero(k < np.float32(f_hf + f_v0))
    ks = k[sec]
    hf = ks < np.float32(f_hf)
    w = np.where(hf, ks * np.float32(1 / f_hf), (ks - np.float32(f_hf)) * np.float32(1 / f_v0))
    dz = -np.log(np.maximum(w, np.float32(1e-30)))
    dz *= np.where(hf, np.float32(l_hf), np.float32(l_v0))
    x[sec] += px[sec] / pz[sec] * dz
    y[sec] += py[sec] / pz[sec] * dz
    z[sec] += dz
    return {
        "evtNumber": np.int64(chunk_index) * np.int64(chunk_size) + e,
        "nTracks": ev.n_tracks[e],
        "nPVs": ev.n_pvs[e],
        "mc_x": x, "mc_y": y, "mc_z": z, "mc_px": px, "mc_py": py, "mc_pz": pz,
        "mc_charge": np.where(positive, np.int32(1), np.int32(-1)),
        "mcID": _PDG_BY_CHARGE[species, positive.view(np.int8)],
    }


# --- decays -----------------------------------------------------------------------------------------------------
def two_body_momentum(m: np.ndarray, m1: np.ndarray | float, m2: np.ndarray | float) -> np.ndarray:
    """Momentum of the daughters of a two-body decay m -> m1 m2 in the mother's rest frame (0 below threshold)."""
    m = np.asarray(m, dtype=np.float64)
    s = (m * m - (m1 + m2) ** 2) * (m * m - (m1 - m2) ** 2)
    return np.sqrt(np.maximum(s, 0.0)) / (2.0 * m)


def isotropic(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors (n, 3), isotropic."""
    u = rng.random((2, n))
    cos_t = 2.0 * u[0] - 1.0
    sin_t = np.sqrt(1.0 - cos_t * cos_t)
    phi = 2.0 * np.pi * u[1]
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)


def boost(p4: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Lorentz-boost four-vectors ``p4`` (n, 4: px, py, pz, E) by velocities ``beta`` (n, 3)."""
    b2 = np.sum(beta * beta, axis=1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p4[:, :3], axis=1)
    coef = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0) * bp + gamma * p4[:, 3]
    out = np.empty_like(p4)
    out[:, :3] = p4[:, :3] + coef[:, None] * beta
    out[:, 3] = gamma * (p4[:, 3] + bp)
    return out


def three_body_decay(rng: np.random.Generator, mother: np.ndarray, mass: float,
                     m1: float, m2: float, m3: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase-space decays of mothers with four-momenta ``mother`` (n, 4) into three daughters: their four-momenta.

    The (1 2) invariant mass is drawn by accept-reject on the phase-space weight q(M; m12, m3) q(m12; m1, m2)
    (exactly uniform in the Dalitz plane), then both two-body steps are isotropic.
    """
    n = len(mother)
    lo, hi = m1 + m2, mass - m3
    w_max = two_body_momentum(mass, lo, m3) * two_body_momentum(hi, m1, m2)
    m12 = np.empty(0)
    while len(m12) < n:
        cand = lo + (hi - lo) * rng.random(2 * (n - len(m12)) + 16)
        w = two_body_momentum(mass, cand, m3) * two_body_momentum(cand, m1, m2)
        m12 = np.concatenate([m12, cand[rng.random(len(cand)) * w_max < w]])
    m12 = m12[:n]
    # mother frame: (1 2) system and particle 3 back to back
    q3 = two_body_momentum(mass, m12, m3)
    d3 = isotropic(rng, n)
    p3 = np.concatenate([q3[:, None] * d3, np.sqrt(q3 * q3 + m3 * m3)[:, None]], axis=1)
    e12 = np.sqrt(q3 * q3 + m12 * m12)
    beta12 = -(q3 / e12)[:, None] * d3
    # (1 2) frame
    q1 = two_body_momentum(m12, m1, m2)
    d1 = isotropic(rng, n)
    p1 = np.concatenate([q1[:, None] * d1, np.sqrt(q1 * q1 + m1 * m1)[:, None]], axis=1)
    p2 = np.concatenate([-q1[:, None] * d1, np.sqrt(q1 * q1 + m2 * m2)[:, None]], axis=1)
    p1, p2 = boost(p1, beta12), boost(p2, beta12)
    # lab frame
    beta = mother[:, :3] / mother[:, 3:4]
    return boost(p1, beta), boost(p2, beta), boost(p3, beta)
