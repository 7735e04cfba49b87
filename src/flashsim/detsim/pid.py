"""Species-dependent particle-identification response of the reference detector (RICH, MUON, GlobalPID).

``respond(pdg_id, p, eta, n_tracks, charge, rng)`` returns the PID columns of the data contract for reconstructed
tracks. Everything is vectorized numpy (float64 inside, float32/int32 out) and draws from ``rng`` in a fixed order.

Physics, in brief (units MeV/c, mrad):

* **RICH** — two gas radiators (RICH1 C4F10, RICH2 CF4). A particle of mass ``m`` radiates at
  ``cos(theta) = 1 / (n beta)`` above its Cherenkov threshold ``p > m / sqrt(n^2 - 1)``, with a photon yield
  proportional to ``sin^2(theta)``. For each mass hypothesis ``h`` the extended log-likelihood of the detected
  photons is ``sum_i log(rho + mu_h G(theta_i - theta_h)) - mu_h``: signal photons around the true angle (their mean
  fluctuating by ``sigma / sqrt(N)``, with a small fraction of confused rings), plus background photons from other
  tracks whose density ``rho`` grows with the occupancy ``nTracks`` (which also degrades the angular resolution and
  the photon efficiency). ``RichDLLx = LL_x - LL_pi`` summed over the radiators a track crosses; 0 without any.
  Hence K-pi separation is large between the pion and kaon thresholds, comes from the threshold (no kaon light) just
  below the kaon threshold, and vanishes below the pion threshold and at very high momentum where rings coincide.
* **MUON** — ``isMuon`` needs ``p`` above ~3 GeV/c (iron absorber); muon efficiency ~98% on the plateau. Hadrons
  fake it by decay in flight (pi, K -> mu nu, with the decay muon carrying a fraction of the momentum), punch-through
  and random hits (more at high occupancy and low momentum, where the search windows are larger). ``MuonMuLL`` /
  ``MuonBgLL`` are log-probabilities of the hit-to-track distance under the muon / background hypotheses (NaN when
  isMuon is 0).
* **GlobalPID** — ``PIDx`` adds calorimeter (E/p, MIP) and muon-system terms to the RICH DLLs; ``ProbNNx`` are
  posterior probabilities from all of them with species priors, each with its own (network-like) noise, softly
  bounded inside [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashsim.detector import PDG_SPECIES, SPECIES_PDG

# PDG masses (MeV/c^2) of the long-lived charged species and the hypotheses order used throughout.
MASSES: dict[str, float] = {"e": 0.51099895, "mu": 105.6583755, "pi": 139.57039, "K": 493.677, "p": 938.27208816}
HYPOTHESES: tuple[str, ...] = ("e", "mu", "pi", "K", "p")
PDG_TO_SPECIES: dict[int, str] = PDG_SPECIES
SPECIES_TO_PDG: dict[str, int] = SPECIES_PDG

RICH_COLUMNS = ("RichDLLe", "RichDLLmu", "RichDLLk", "RichDLLp")
MUON_COLUMNS = ("MuonMuLL", "MuonBgLL")
GLOBAL_COLUMNS = ("PIDe", "PIDmu", "PIDK", "PIDp", "ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp")
COLUMNS = (*RICH_COLUMNS, "isMuon", *MUON_COLUMNS, *GLOBAL_COLUMNS)


@dataclass(frozen=True)
class Radiator:
    name: str
    n_minus_1: float  # refractive index - 1
    yield_sat: float  # detected photons of a saturated (beta = 1) ring
    sigma: float  # single-photon Cherenkov-angle resolution (mrad)
    bkg0: float  # background photons in the ring search region at zero occupancy
    bkg_per_100: float  # ... added per 100 tracks
    eta_lo: float  # acceptance edges in pseudorapidity
    eta_hi: float

    @property
    def theta_max(self) -> float:
        return float(np.arccos(1.0 / (1.0 + self.n_minus_1)) * 1e3)


RICH1 = Radiator("RICH1", 1.4e-3, 30.0, 1.6, 2.0, 4.0, 1.65, 4.95)
RICH2 = Radiator("RICH2", 5.0e-4, 22.0, 0.7, 1.0, 2.5, 2.65, 5.30)
RADIATORS = (RICH1, RICH2)


def species_index(pdg_id: np.ndarray) -> np.ndarray:
    """Index into HYPOTHESES of each PDG id (sign ignored); ValueError for unknown ids."""
    a = np.abs(np.asarray(pdg_id)).astype(np.int64)
    out = np.full(a.shape, -1, dtype=np.int64)
    for code, sp in PDG_TO_SPECIES.items():
        out[a == code] = HYPOTHESES.index(sp)
    if (out < 0).any():
        bad = np.unique(a[out < 0])[:5]
        raise ValueError(f"no PID response for PDG ids {bad.tolist()} (known: {sorted(PDG_TO_SPECIES)})")
    return out


def cherenkov_angle(p: np.ndarray, mass: float | np.ndarray, n_minus_1: float) -> np.ndarray:
    """Cherenkov angle (mrad) of momentum ``p`` (MeV/c) and ``mass``; 0 below threshold."""
    p = np.asarray(p, dtype=np.float64)
    cos = np.sqrt(1.0 + (np.asarray(mass, dtype=np.float64) / p) ** 2) / (1.0 + n_minus_1)
    return np.where(cos < 1.0, np.arccos(np.minimum(cos, 1.0)) * 1e3, 0.0)


def threshold(mass: float, n_minus_1: float) -> float:
    """Cherenkov threshold momentum (MeV/c)."""
    n = 1.0 + n_minus_1
    return mass / np.sqrt(n * n - 1.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _gauss(d: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (d / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)


def _rich(sp: np.ndarray, p: np.ndarray, eta: np.ndarray, ntr: np.ndarray, charge: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """Sum over radiators of LL_h - LL_pi: array [n, 5] in HYPOTHESES order (pi column is 0)."""
    n = p.size
    masses = np.array([MASSES[h] for h in HYPOTHESES])
    ll_tot = np.zeros((n, len(HYPOTHESES)))
    occ = ntr / 100.0
    for rad in RADIATORS:
        # acceptance (soft edges in eta), drawn per track
        acc_p = 0.995 * _sigmoid((eta - rad.eta_lo) / 0.04) * _sigmoid((rad.eta_hi - eta) / 0.06)
        inside = rng.random(n) < acc_p
        sin2max = np.sin(rad.theta_max * 1e-3) ** 2
        theta_h = cherenkov_angle(p[:, None], masses[None, :], rad.n_minus_1)  # [n, 5]
        eff = np.clip(1.0 - 0.04 * occ, 0.5, 1.0) * (1.0 + 0.03 * charge)  # occupancy and magnet-side effects
        mu_h = rad.yield_sat * eff[:, None] * np.sin(theta_h * 1e-3) ** 2 / sin2max
        sigma = rad.sigma * (1.0 + 0.08 * occ)
        width = rad.theta_max * 1.3
        n_bkg_exp = rad.bkg0 + rad.bkg_per_100 * occ
        rho = n_bkg_exp / width  # background photon density per mrad
        # signal photons of the true hypothesis
        true_theta = theta_h[np.arange(n), sp]
        n_sig = rng.poisson(mu_h[np.arange(n), sp])
        shift = rng.normal(size=n) * sigma / np.sqrt(np.maximum(n_sig, 1))
        confused = rng.random(n) < 0.015 + 0.01 * occ
        shift = np.where(confused, rng.laplace(scale=2.5 * sigma), shift)
        theta_obs = true_theta + shift
        # Gauss-Hermite (3 points) average of log(rho + mu_h G) over the photon spread around the observed mean
        nodes, weights = np.array([-np.sqrt(3.0), 0.0, np.sqrt(3.0)]), np.array([1 / 6, 2 / 3, 1 / 6])
        ll = -mu_h.copy()
        for z, w in zip(nodes, weights, strict=True):
            th = theta_obs + z * sigma
            ll += (w * n_sig)[:, None] * np.log(rho[:, None] + mu_h * _gauss(th[:, None] - theta_h, sigma[:, None]))
        # background photons from other tracks, uniform in angle
        n_b = rng.poisson(n_bkg_exp)
        idx = np.repeat(np.arange(n), n_b)
        th_b = rng.random(idx.size) * width
        for k in range(len(HYPOTHESES)):
            term = np.log(rho[idx] + mu_h[idx, k] * _gauss(th_b - theta_h[idx, k], sigma[idx]))
            ll[:, k] += np.bincount(idx, weights=term, minlength=n)
        dll = ll - ll[:, [HYPOTHESES.index("pi")]]
        ll_tot += np.where(inside[:, None], dll, 0.0)
    return ll_tot


def muon_efficiency(p: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """isMuon efficiency of a true muon: turn-on at ~3 GeV/c (iron absorber), ~98% plateau, lower at the edges."""
    edge = _sigmoid((eta - 1.95) / 0.05) * _sigmoid((5.0 - eta) / 0.08)
    return 0.985 * _sigmoid((p - 3200.0) / 350.0) * (0.9 + 0.1 * edge)


# c*tau (mm) and branching fraction to mu nu of the hadrons decaying in flight; mu momentum fraction range
_DIF = {"pi": (7804.5, 0.9999, (MASSES["mu"] / MASSES["pi"]) ** 2), "K": (3711.0, 0.6356,
                                                                         (MASSES["mu"] / MASSES["K"]) ** 2)}
_DECAY_PATH = 2500.0  # mm of flight where a decay still gives a track matched to the muon hits


def _muon(sp: np.ndarray, p: np.ndarray, eta: np.ndarray, ntr: np.ndarray, charge: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = p.size
    # categories: 0 none, 1 true muon, 2 decay in flight, 3 punch-through, 4 random hits
    cat = np.zeros(n, dtype=np.int8)
    u = rng.random((n, 4))
    is_mu = sp == HYPOTHESES.index("mu")
    cat[is_mu & (u[:, 0] < muon_efficiency(p, eta))] = 1
    p_mu = p.copy()
    for name, (ctau, br, xmin) in _DIF.items():
        sel = sp == HYPOTHESES.index(name)
        mass = MASSES[name]
        prob = br * -np.expm1(-_DECAY_PATH * mass / (p * ctau))
        frac = xmin + (1.0 - xmin) * u[:, 1]
        decayed = sel & (u[:, 0] < prob)
        p_mu = np.where(decayed, p * frac, p_mu)
        cat[decayed & (u[:, 2] < muon_efficiency(p * frac, eta))] = 2
    hadron = (sp == HYPOTHESES.index("pi")) | (sp == HYPOTHESES.index("K")) | (sp == HYPOTHESES.index("p"))
    qfac = np.where(sp == HYPOTHESES.index("pi"), 1.0, 1.0 + 0.15 * charge)  # K-, pbar absorbed more
    scale = np.where(sp == HYPOTHESES.index("p"), 0.7, 1.0)
    pt_prob = 0.0025 * scale * qfac * (p / 10000.0) ** 0.3 * _sigmoid((p - 3500.0) / 500.0)
    u3 = u[:, 3]
    punch = hadron & (cat == 0) & (u3 < pt_prob)
    cat[punch] = 3
    rnd_prob = 0.0025 * (ntr / 150.0) * (1.0 + 6000.0 / p) * _sigmoid((p - 3000.0) / 400.0)
    rnd = (cat == 0) & ~is_mu & (u3 >= pt_prob) & (u3 < pt_prob + rnd_prob)
    cat[rnd] = 4
    is_muon = cat > 0
    # hit-to-track distance (normalised): multiple scattering grows at low momentum
    theta_mu = 0.5 * (1.0 + 5000.0 / np.maximum(p_mu, 1000.0))
    spread = np.array([1.0, 1.0, 1.6, 2.6, 4.0])[cat]
    d = rng.gamma(2.0, 1.0, n) * theta_mu * spread
    d_bg = d * np.exp(0.25 * rng.normal(size=n))
    x = d / theta_mu
    mu_ll = np.log1p(x) - x  # log P(D' > D | muon), Gamma(2) distance
    xb = np.maximum(d_bg / 3.0, 1e-4)
    cdf = np.where(xb < 1e-3, 0.5 * xb * xb - xb ** 3 / 3.0, -np.expm1(-xb) - xb * np.exp(-xb))
    bg_ll = np.log(np.maximum(cdf, 1e-300))  # log P(D' < D | background)
    mu_ll = np.maximum(mu_ll, -14.0)
    bg_ll = np.maximum(bg_ll, -14.0)
    mu_ll = np.where(is_muon, mu_ll, np.nan)
    bg_ll = np.where(is_muon, bg_ll, np.nan)
    return is_muon, mu_ll, bg_ll


PRIORS = {"e": 0.02, "mu": 0.02, "pi": 0.70, "K": 0.15, "p": 0.11}


def _soft_clip(z: np.ndarray, limit: float = 9.0) -> np.ndarray:
    return limit * np.tanh(z / limit)


def _global(sp: np.ndarray, p: np.ndarray, eta: np.ndarray, rich: np.ndarray, is_muon: np.ndarray,
            mu_ll: np.ndarray, bg_ll: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = p.size
    z = rng.normal(size=(n, 14))
    in_calo = rng.random(n) < 0.93 * _sigmoid((eta - 1.9) / 0.05) * _sigmoid((4.9 - eta) / 0.06)
    is_e, is_mu = sp == 0, sp == 1
    tail = rng.random(n) < 0.05  # hadronic showers mimicking E/p ~ 1
    calo_e = np.where(is_e, 7.0 + 2.5 * z[:, 0], np.where(is_mu, -3.0 + 1.0 * z[:, 0],
                                                           np.where(tail, 1.0 + 3.0 * z[:, 0], -2.5 + 2.0 * z[:, 0])))
    calo_e = np.where(in_calo, calo_e, 0.0)
    calo_mu = np.where(in_calo, np.where(is_mu, 0.8 + 0.6 * z[:, 1], -0.3 + 0.8 * z[:, 1]), 0.0)
    # isMuon itself is worth log(0.98 / 0.01) ~ +4.6 for a muon; failing it log(0.02 / 0.99) ~ -4
    muon_dll = np.where(is_muon, 3.5 + np.clip(np.nan_to_num(mu_ll - bg_ll), -12.0, 14.0), -4.0 + 0.5 * z[:, 2])
    pid = {
        "PIDe": rich[:, 0] + calo_e,
        "PIDmu": rich[:, 1] + calo_mu + muon_dll,
        "PIDK": rich[:, 3] + 0.3 * z[:, 3],
        "PIDp": rich[:, 4] + 0.3 * z[:, 4],
    }
    # posterior over (e, mu, pi, K, p) with priors; each ProbNN has its own calibration and noise
    logl = np.stack([pid["PIDe"], pid["PIDmu"], np.zeros(n), pid["PIDK"], pid["PIDp"]], axis=1)
    logl = logl + np.log([PRIORS[h] for h in HYPOTHESES])[None, :]
    out = dict(pid)
    names = ("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp")
    lp = np.log10(p / 10000.0)
    for k, name in enumerate(names):
        others = np.delete(logl, k, axis=1)
        m = others.max(axis=1)
        lse = m + np.log(np.exp(others - m[:, None]).sum(axis=1))
        logit = 0.8 * (logl[:, k] - lse) + 0.3 * lp * (k in (3, 4)) + 0.4 * z[:, 5 + min(k, 3)]
        # saturating like a network's output layer, with a little output noise so that saturated values
        # stay continuous instead of piling up on one float
        out[name] = _sigmoid(_soft_clip(logit) + 0.25 * z[:, 9 + k])
    return out


def respond(pdg_id: np.ndarray, p: np.ndarray, eta: np.ndarray, n_tracks: np.ndarray, charge: np.ndarray,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """PID response of reconstructed tracks: the contract's PID columns (float32; isMuon int32; Muon LLs NaN
    where isMuon == 0). ``p`` in MeV/c, ``eta`` pseudorapidity, ``n_tracks`` occupancy, ``charge`` +-1."""
    sp = species_index(pdg_id).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    eta = np.asarray(eta, dtype=np.float64).ravel()
    ntr = np.broadcast_to(np.asarray(n_tracks, dtype=np.float64), p.shape).ravel()
    q = np.broadcast_to(np.sign(np.asarray(charge, dtype=np.float64)), p.shape).ravel()
    if not (sp.size == p.size == eta.size):
        raise ValueError("pdg_id, p and eta must have the same length")
    if p.size == 0:
        return {c: np.zeros(0, np.int32 if c == "isMuon" else np.float32) for c in COLUMNS}
    p = np.maximum(p, 1.0)
    rich = _rich(sp, p, eta, ntr, q, rng)
    is_muon, mu_ll, bg_ll = _muon(sp, p, eta, ntr, q, rng)
    glob = _global(sp, p, eta, rich, is_muon, mu_ll, bg_ll, rng)
    out: dict[str, np.ndarray] = {
        "RichDLLe": rich[:, 0], "RichDLLmu": rich[:, 1], "RichDLLk": rich[:, 3], "RichDLLp": rich[:, 4],
        "isMuon": is_muon.astype(np.int32), "MuonMuLL": mu_ll, "MuonBgLL": bg_ll, **glob,
    }
    return {c: out[c].astype(np.int32 if c == "isMuon" else np.float32) for c in COLUMNS}
