"""PIDCalib-like calibration samples (kind ``pid_calib``): tag-and-probe candidates with sPlot sWeights.

One channel per sample (``options["channel"]``): ``jpsi_mumu`` (muon probes), ``dstar_d0pi_pi`` and
``dstar_d0pi_K`` (D*+ -> D0(K- pi+) pi+, pion and kaon probes), ``lambda_ppi`` (proton probes). Each candidate is
signal (a probe of the channel's species from the mother decay) or combinatorial background (a random track with a
different species mix, softer momentum and busier events) under the mother's mass peak. The probe's PID response
comes from :func:`flashsim.detsim.pid.respond`.

``probe_sWeight`` comes from a real sPlot: an extended maximum-likelihood fit of the mother mass (double-Gaussian
signal with its tail shape fixed from simulation + exponential background; yields, mean, width and slope free;
iminuit), then the classic sWeights
``w_s(m) = (V_ss f_s(m) + V_sb f_b(m)) / (N_s f_s(m) + N_b f_b(m))`` with ``V`` the yields' covariance
``V^-1_ij = sum_e f_i f_j / (sum_k N_k f_k)^2``. The mass is drawn first from each chunk's own stream, so a cheap
first pass over all chunks (masses only) feeds the fit; the second pass regenerates each chunk from ``rng_for(i)``
alone and weights it with the fitted pdfs and covariance. Up to ``FIT_MAX`` candidates the fit is unbinned on all
masses; above, it is a binned extended fit on a fine histogram of all masses (same pdfs, bin integrals), so full
scale never holds the sample in memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri

from flashsim.detsim.pid import HYPOTHESES, SPECIES_TO_PDG, respond

log = logging.getLogger(__name__)

FIT_MAX = 2_000_000  # candidates up to which the sPlot fit is unbinned on all masses
FINE_BINS = 4000  # bins of the full-sample mass histogram above FIT_MAX
P_RANGE = (2000.0, 200000.0)  # MeV/c
ETA_RANGE = (1.5, 5.5)
TAIL_RATIO = 2.2  # width of the signal's tail Gaussian / core width


@dataclass(frozen=True)
class Channel:
    probe: str  # species of the signal probe
    mass: float  # mother mass (MeV/c^2)
    sigma: float  # core mass resolution
    window: tuple[float, float]  # mass window of the sample
    signal_fraction: float
    slope: float  # exponential background slope (1/MeV)
    p_signal: tuple[float, float]  # log-normal probe momentum: median (MeV/c), sigma of log
    eta_signal: tuple[float, float]
    p_background: tuple[float, float]
    eta_background: tuple[float, float]
    background_mix: dict[str, float] = field(default_factory=dict)
    muon_unbiased: float = 0.95  # fraction of probes whose muon response is unbiased by the trigger
    tail_fraction: float = 0.25  # of the signal in the wider Gaussian (TAIL_RATIO sigma)


CHANNELS: dict[str, Channel] = {
    "jpsi_mumu": Channel("mu", 3096.9, 13.0, (3000.0, 3200.0), 0.45, -0.004, (20000.0, 0.65), (3.2, 0.75),
                         (8000.0, 0.8), (2.9, 0.8), {"pi": 0.60, "K": 0.18, "p": 0.07, "mu": 0.10, "e": 0.05}, 0.5),
    "dstar_d0pi_pi": Channel("pi", 1864.84, 7.5, (1815.0, 1915.0), 0.55, -0.008, (14000.0, 0.7), (3.3, 0.7),
                             (7000.0, 0.8), (2.9, 0.8), {"pi": 0.56, "K": 0.28, "p": 0.13, "mu": 0.005, "e": 0.025}),
    "dstar_d0pi_K": Channel("K", 1864.84, 7.5, (1815.0, 1915.0), 0.55, -0.008, (16000.0, 0.7), (3.3, 0.7),
                            (7000.0, 0.8), (2.9, 0.8), {"pi": 0.71, "K": 0.12, "p": 0.145, "mu": 0.005, "e": 0.02}),
    "lambda_ppi": Channel("p", 1115.683, 1.6, (1100.0, 1132.0), 0.5, -0.02, (25000.0, 0.6), (3.4, 0.7),
                          (8000.0, 0.8), (2.9, 0.8), {"pi": 0.66, "K": 0.13, "p": 0.19, "mu": 0.005, "e": 0.015}),
}


def channel(options: dict) -> Channel:
    name = options.get("channel")
    if name not in CHANNELS:
        raise ValueError(f"pid_calib sample needs options['channel'] in {sorted(CHANNELS)}, got {name!r}")
    return CHANNELS[name]


def _truncnorm(rng: np.random.Generator, n: int, mu: np.ndarray | float, sigma: np.ndarray | float,
               lo: float, hi: float) -> np.ndarray:
    """Normal(mu, sigma) truncated to [lo, hi] by inverse CDF (one uniform per entry)."""
    a, b = ndtr((lo - mu) / sigma), ndtr((hi - mu) / sigma)
    u = a + rng.random(n) * (b - a)
    return np.clip(mu + sigma * ndtri(np.clip(u, 1e-15, 1 - 1e-15)), lo, hi)


# ---------------------------------------------------------------------------------------------- mass model
@dataclass
class MassModel:
    """Double-Gaussian signal + exponential background on a window; the pdfs of the sPlot."""

    lo: float
    hi: float
    mean: float
    sigma: float
    ratio: float  # sigma of the tail Gaussian / sigma
    f_tail: float
    slope: float

    def f_signal(self, m: np.ndarray) -> np.ndarray:
        out = np.zeros_like(m, dtype=np.float64)
        for frac, s in ((1.0 - self.f_tail, self.sigma), (self.f_tail, self.sigma * self.ratio)):
            norm = ndtr((self.hi - self.mean) / s) - ndtr((self.lo - self.mean) / s)
            out += frac * np.exp(-0.5 * ((m - self.mean) / s) ** 2) / (math.sqrt(2 * math.pi) * s * norm)
        return out

    def f_background(self, m: np.ndarray) -> np.ndarray:
        w = self.hi - self.lo
        if abs(self.slope * w) < 1e-8:
            return np.full_like(m, 1.0 / w, dtype=np.float64)
        return self.slope * np.exp(self.slope * (m - self.lo)) / math.expm1(self.slope * w)

    def cdf_signal(self, m: np.ndarray) -> np.ndarray:
        out = np.zeros_like(m, dtype=np.float64)
        for frac, s in ((1.0 - self.f_tail, self.sigma), (self.f_tail, self.sigma * self.ratio)):
            a = ndtr((self.lo - self.mean) / s)
            out += frac * (ndtr((m - self.mean) / s) - a) / (ndtr((self.hi - self.mean) / s) - a)
        return out

    def cdf_background(self, m: np.ndarray) -> np.ndarray:
        w = self.hi - self.lo
        if abs(self.slope * w) < 1e-8:
            return (m - self.lo) / w
        return np.expm1(self.slope * (m - self.lo)) / math.expm1(self.slope * w)


def truth_model(ch: Channel) -> MassModel:
    return MassModel(ch.window[0], ch.window[1], ch.mass, ch.sigma, TAIL_RATIO, ch.tail_fraction, ch.slope)


def draw_masses(ch: Channel, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """First draws of every chunk: (is_signal, mother mass rounded to float32)."""
    lo, hi = ch.window
    is_signal = rng.random(n) < ch.signal_fraction
    tail = rng.random(n) < ch.tail_fraction
    sig_m = _truncnorm(rng, n, ch.mass, np.where(tail, TAIL_RATIO * ch.sigma, ch.sigma), lo, hi)
    u = rng.random(n)
    w = hi - lo
    bkg_m = lo + np.log1p(u * math.expm1(ch.slope * w)) / ch.slope
    m = np.where(is_signal, sig_m, bkg_m).astype(np.float32)
    return is_signal, m


# ---------------------------------------------------------------------------------------------- sPlot
@dataclass
class SPlot:
    """A fitted mass model, the fitted yields and their covariance: everything the sWeights need."""

    model: MassModel
    n_signal: float
    n_background: float
    cov: np.ndarray  # 2x2 covariance of (N_s, N_b) with the shapes fixed (the sPlot matrix)

    def weights(self, m: np.ndarray) -> np.ndarray:
        """Signal sWeights of masses ``m`` (float64)."""
        m = np.asarray(m, dtype=np.float64)
        fs, fb = self.model.f_signal(m), self.model.f_background(m)
        den = self.n_signal * fs + self.n_background * fb
        return (self.cov[0, 0] * fs + self.cov[0, 1] * fb) / den


def _inverse_cov(model: MassModel, ns: float, nb: float, m: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
    fs, fb = model.f_signal(m), model.f_background(m)
    den2 = (ns * fs + nb * fb) ** 2
    c = np.ones_like(m) if counts is None else counts
    return np.array([[np.sum(c * fs * fs / den2), np.sum(c * fs * fb / den2)],
                     [np.sum(c * fs * fb / den2), np.sum(c * fb * fb / den2)]])


def fit_splot(ch: Channel, masses: np.ndarray | None = None, hist: tuple[np.ndarray, np.ndarray] | None = None
              ) -> SPlot:
    """Extended ML fit of the mother mass (unbinned on ``masses`` or binned on ``hist`` = (counts, edges)),
    then the sPlot covariance of the yields with the fitted shapes fixed."""
    from iminuit import Minuit

    lo, hi = ch.window
    if masses is not None:
        m_data = np.asarray(masses, dtype=np.float64)
        n_tot = m_data.size
    else:
        counts, edges = hist
        n_tot = int(counts.sum())
    if n_tot < 50:
        raise ValueError(f"sPlot fit needs at least 50 candidates, got {n_tot}")

    def make(mean, sigma, ratio, f_tail, slope) -> MassModel:
        return MassModel(lo, hi, mean, sigma, ratio, f_tail, slope)

    if masses is not None:
        def nll(ns, nb, mean, sigma, ratio, f_tail, slope):
            mod = make(mean, sigma, ratio, f_tail, slope)
            dens = ns * mod.f_signal(m_data) + nb * mod.f_background(m_data)
            return ns + nb - np.sum(np.log(np.maximum(dens, 1e-300)))
    else:
        def nll(ns, nb, mean, sigma, ratio, f_tail, slope):
            mod = make(mean, sigma, ratio, f_tail, slope)
            mu = ns * np.diff(mod.cdf_signal(edges)) + nb * np.diff(mod.cdf_background(edges))
            mu = np.maximum(mu, 1e-300)
            return np.sum(mu - counts * np.log(mu))

    w = hi - lo
    # the tail shape (width ratio, fraction) is fixed from simulation, as in PIDCalib fits: left free it trades
    # signal for background under the peak
    mi = Minuit(nll, ns=0.5 * n_tot, nb=0.5 * n_tot, mean=ch.mass, sigma=ch.sigma * 1.3, ratio=TAIL_RATIO,
                f_tail=ch.tail_fraction, slope=-1.0 / w)
    mi.fixed["ratio"] = True
    mi.fixed["f_tail"] = True
    mi.errordef = Minuit.LIKELIHOOD
    mi.limits["ns"] = (0, 2 * n_tot)
    mi.limits["nb"] = (0, 2 * n_tot)
    mi.limits["mean"] = (ch.mass - 0.2 * w, ch.mass + 0.2 * w)
    mi.limits["sigma"] = (0.05 * ch.sigma, 0.25 * w)
    mi.limits["slope"] = (-20.0 / w, 20.0 / w)
    mi.strategy = 1
    mi.migrad()
    if not mi.valid:
        mi.migrad()
    if not mi.valid:
        raise RuntimeError(f"sPlot mass fit did not converge: {mi.fmin}")
    v = mi.values
    model = make(v["mean"], v["sigma"], v["ratio"], v["f_tail"], v["slope"])
    if masses is not None:
        inv = _inverse_cov(model, v["ns"], v["nb"], m_data, None)
    else:
        centers = 0.5 * (edges[1:] + edges[:-1])
        inv = _inverse_cov(model, v["ns"], v["nb"], centers, counts.astype(np.float64))
    cov = np.linalg.inv(inv)
    log.info("sPlot fit: N_s = %.1f, N_b = %.1f, mean = %.3f, sigma = %.3f", v["ns"], v["nb"], v["mean"], v["sigma"])
    return SPlot(model, float(v["ns"]), float(v["nb"]), cov)


# ---------------------------------------------------------------------------------------------- chunks
def _chunk_sizes(n: int, chunk_size: int) -> list[int]:
    return [min(chunk_size, n - i) for i in range(0, n, chunk_size)]


def splot_for(ch: Channel, sizes: list[int], rng_for: Callable[[int], np.random.Generator]) -> SPlot:
    """First pass: the masses of every chunk (their first draws), then the sPlot fit."""
    n = sum(sizes)
    lo, hi = ch.window
    if n <= FIT_MAX:
        masses = np.concatenate([draw_masses(ch, k, rng_for(i))[1] for i, k in enumerate(sizes)])
        return fit_splot(ch, masses=masses)
    edges = np.linspace(lo, hi, FINE_BINS + 1)
    counts = np.zeros(FINE_BINS, dtype=np.int64)
    for i, k in enumerate(sizes):
        counts += np.histogram(draw_masses(ch, k, rng_for(i))[1], bins=edges)[0]
    return fit_splot(ch, hist=(counts, edges))


def _candidates(ch: Channel, is_signal: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = is_signal.size
    species = list(ch.background_mix)
    probs = np.array([ch.background_mix[s] for s in species])
    bkg_sp = np.array([SPECIES_TO_PDG[s] for s in species])[rng.choice(len(species), n, p=probs / probs.sum())]
    pdg_abs = np.where(is_signal, SPECIES_TO_PDG[ch.probe], bkg_sp)
    charge = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int32)
    # PDG sign: positive particle for charge +1 (leptons are the other way round)
    lepton = (pdg_abs == 11) | (pdg_abs == 13)
    pdg = pdg_abs * np.where(lepton, -charge, charge)
    med = np.where(is_signal, ch.p_signal[0], ch.p_background[0])
    s = np.where(is_signal, ch.p_signal[1], ch.p_background[1])
    p = np.exp(_truncnorm(rng, n, np.log(med), s, *np.log(P_RANGE)))
    eta = _truncnorm(rng, n, np.where(is_signal, ch.eta_signal[0], ch.eta_background[0]),
                     np.where(is_signal, ch.eta_signal[1], ch.eta_background[1]), *ETA_RANGE)
    # occupancy: combinatorial background grows with the number of tracks, so it comes from busier events
    n_tracks = (10 + rng.gamma(np.where(is_signal, 3.0, 4.0), 45.0)).astype(np.int32)
    unbiased = (rng.random(n) < ch.muon_unbiased).astype(np.int32)
    resp = respond(pdg, p, eta, n_tracks, charge, rng)
    return {"pdg": pdg, "p": p, "eta": eta, "charge": charge, "nTracks": n_tracks, "unbiased": unbiased, **resp}


_PROBE = "probe_Brunel_"
_PROBNN = {"ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp"}


def chunks(n: int, chunk_size: int, rng_for: Callable[[int], np.random.Generator], options: dict
           ) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of a calibration sample (contract ``pid_calib`` names; ``mother_M`` is the mother's mass)."""
    ch = channel(options)
    sizes = _chunk_sizes(n, chunk_size)
    splot = splot_for(ch, sizes, rng_for)
    offset = 0
    for i, k in enumerate(sizes):
        rng = rng_for(i)
        is_signal, mass = draw_masses(ch, k, rng)
        c = _candidates(ch, is_signal, rng)
        out: dict[str, np.ndarray] = {
            f"{_PROBE}P": c["p"].astype(np.float32),
            f"{_PROBE}ETA": c["eta"].astype(np.float32),
            "nTracks_Brunel": c["nTracks"],
            f"{_PROBE}trackcharge": c["charge"],
        }
        for h in ("RichDLLe", "RichDLLmu", "RichDLLk", "RichDLLp", "isMuon"):
            out[f"{_PROBE}{h}"] = c[h]
        out[f"{_PROBE}MuonUnbiased"] = c["unbiased"]
        for h in ("MuonMuLL", "MuonBgLL", "PIDe", "PIDmu", "PIDK", "PIDp"):
            out[f"{_PROBE}{h}"] = c[h]
        for h in ("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp"):
            out[f"{_PROBE}MC15TuneV1_{h}"] = c[h]
        out["probe_sWeight"] = splot.weights(mass)
        out["mother_M"] = mass
        out["evtNumber"] = np.arange(offset, offset + k, dtype=np.int64) + 1
        out["is_signal"] = is_signal.astype(np.int32)
        offset += k
        yield out


__all__ = ["CHANNELS", "HYPOTHESES", "SPlot", "chunks", "fit_splot"]
