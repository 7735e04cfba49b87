"""ECAL response of the reference detector simulation: photons on the ECAL face -> reconstructed clusters.

Per event, photons come from pi0 -> gamma gamma decays and prompt photons produced at the primary vertex. The
photons that hit the ECAL face (outside the beam hole, inside the outer boundary) are the generated photons of
the sample. Photons closer than ``merge_scale`` cells of each other are not resolved and merge into one cluster
(friends-of-friends, so chains merge too); a cluster's energy is the sum of its photons' energies smeared with
``a/sqrt(E) (+) b (+) c/E`` (plus a low-side leakage tail), its position is the energy-weighted barycentre
smeared with a position resolution in units of the local cell size, and clusters below an ET threshold are lost.
So n photons give m <= n clusters, and the known truth (which photon went into which cluster) is kept.

All quantities are vectorized over a chunk of events; chunk ``i`` draws only from ``rng_for(i)``. The ECAL
geometry (face z, regions and cell sizes, beam hole) is the configured one (``params.yaml`` ``detector.ecal``,
:mod:`flashsim.detector`), passed in ``options["detector"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace

import awkward as ak
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from flashsim.detector import LHCB_ECAL, EcalGeometry, ecal_geometry
from flashsim.io.ecal import event_pairs

PI0_MASS = 134.9768  # MeV/c^2


@dataclass(frozen=True)
class EcalConfig:
    """Physics knobs of the ECAL response (overridable per sample in ``params.yaml``: ``detsim.samples.<s>.ecal``)."""

    mean_pi0: float = 4.0  # pi0 per event (negative binomial mean)
    pi0_dispersion: float = 2.5  # negative binomial shape: smaller = broader multiplicity
    mean_prompt: float = 1.5  # prompt photons per event (Poisson)
    pt_scale_pi0: float = 4000.0  # MeV, Lomax spectrum scale (mean pT = scale / (alpha - 1))
    pt_alpha_pi0: float = 5.0
    pt_scale_prompt: float = 2500.0
    pt_alpha_prompt: float = 4.5
    eta_range: tuple[float, float] = (1.8, 5.2)
    merge_scale: float = 1.5  # photons closer than merge_scale * cell size merge into one cluster
    res_a: float = 0.10  # stochastic term, sqrt(GeV)
    res_b: float = 0.01  # constant term
    res_c: float = 0.02  # noise term, GeV
    tail_fraction: float = 0.08  # fraction of clusters with longitudinal leakage
    tail_mean: float = 0.04  # mean relative energy lost by those (exponential)
    pos_a: float = 0.12  # position resolution stochastic term, cell units * sqrt(GeV)
    pos_b: float = 0.015  # position resolution constant term, cell units
    threshold_et: float = 200.0  # MeV, clusters with reconstructed ET below are lost
    pv_sigma: tuple[float, float, float] = (0.04, 0.04, 45.0)  # mm


def config_from(options: dict | None) -> EcalConfig:
    """The default :class:`EcalConfig` updated with ``options["ecal"]`` (unknown keys are an error)."""
    over = dict((options or {}).get("ecal") or {})
    known = {f.name for f in fields(EcalConfig)}
    unknown = set(over) - known
    if unknown:
        from flashsim.errors import ConfigError

        raise ConfigError(f"detsim ecal options: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
    return replace(EcalConfig(), **over)


def energy_resolution(e: np.ndarray, cfg: EcalConfig) -> np.ndarray:
    """Relative Gaussian energy resolution sigma_E / E at energy ``e`` (MeV)."""
    eg = np.maximum(np.asarray(e, dtype=np.float64), 1.0) / 1000.0
    return np.sqrt((cfg.res_a / np.sqrt(eg)) ** 2 + cfg.res_b**2 + (cfg.res_c / eg) ** 2)


def position_resolution(e: np.ndarray, cell: np.ndarray, cfg: EcalConfig) -> np.ndarray:
    """Position resolution (mm) per coordinate at energy ``e`` (MeV) in a region of cell size ``cell``."""
    eg = np.maximum(np.asarray(e, dtype=np.float64), 1.0) / 1000.0
    return cell * np.sqrt((cfg.pos_a / np.sqrt(eg)) ** 2 + cfg.pos_b**2)


def _lomax(rng: np.random.Generator, n: int, scale: float, alpha: float) -> np.ndarray:
    """A falling, power-law-tailed pT spectrum (Lomax / Pareto II), MeV."""
    return scale * ((1.0 - rng.random(n)) ** (-1.0 / alpha) - 1.0) + 1.0


def _directions(rng: np.random.Generator, n: int, eta_range: tuple[float, float]) -> tuple[np.ndarray, ...]:
    eta = rng.uniform(*eta_range, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    return eta, phi


def _pi0_photons(rng: np.random.Generator, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Decay pi0 (pt, eta, phi) isotropically into two photons: (2n, 3) momenta, pairs adjacent."""
    n = len(pt)
    p = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1)
    e = np.sqrt((p**2).sum(1) + PI0_MASS**2)
    beta = p / e[:, None]
    b2 = (beta**2).sum(1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    cost = rng.uniform(-1.0, 1.0, n)
    sint = np.sqrt(1.0 - cost**2)
    ph = rng.uniform(0.0, 2.0 * np.pi, n)
    half = PI0_MASS / 2.0
    star = half * np.stack([sint * np.cos(ph), sint * np.sin(ph), cost], axis=1)
    out = np.empty((2 * n, 3))
    for sign, sl in ((1.0, slice(0, None, 2)), (-1.0, slice(1, None, 2))):
        ps = sign * star
        bp = (beta * ps).sum(1)
        coef = np.where(b2 > 0, (gamma - 1.0) * bp / np.where(b2 > 0, b2, 1.0), 0.0) + gamma * half
        out[sl] = ps + coef[:, None] * beta
    return out


@dataclass
class EcalEvents:
    """Flat photons and clusters of a chunk of events (the arrays behind the jagged contract columns)."""

    n_photons: np.ndarray
    photons: dict[str, np.ndarray]  # photon_x, photon_y, photon_tx, photon_ty, photon_E, photon_clusterIndex
    n_clusters: np.ndarray
    clusters: dict[str, np.ndarray]  # cluster_x, cluster_y, cluster_E, cluster_nPhotons


def simulate(n_events: int, rng: np.random.Generator, cfg: EcalConfig = EcalConfig(),
             geometry: EcalGeometry = LHCB_ECAL) -> EcalEvents:
    """Generate ``n_events`` events: photons on the ECAL face of ``geometry`` and their reconstructed clusters."""
    pv = rng.normal(0.0, cfg.pv_sigma, (n_events, 3))
    k = cfg.pi0_dispersion
    n_pi0 = rng.negative_binomial(k, k / (k + cfg.mean_pi0), n_events)
    n_prompt = rng.poisson(cfg.mean_prompt, n_events)

    pt = _lomax(rng, int(n_pi0.sum()), cfg.pt_scale_pi0, cfg.pt_alpha_pi0)
    eta, phi = _directions(rng, len(pt), cfg.eta_range)
    p_pi0 = _pi0_photons(rng, pt, eta, phi)
    ev_pi0 = np.repeat(np.repeat(np.arange(n_events), n_pi0), 2)

    pt_g = _lomax(rng, int(n_prompt.sum()), cfg.pt_scale_prompt, cfg.pt_alpha_prompt)
    eta_g, phi_g = _directions(rng, len(pt_g), cfg.eta_range)
    p_prompt = np.stack([pt_g * np.cos(phi_g), pt_g * np.sin(phi_g), pt_g * np.sinh(eta_g)], axis=1)
    ev_prompt = np.repeat(np.arange(n_events), n_prompt)

    mom = np.concatenate([p_pi0, p_prompt])
    event = np.concatenate([ev_pi0, ev_prompt])
    forward = mom[:, 2] > 0
    mom, event = mom[forward], event[forward]
    tx, ty = mom[:, 0] / mom[:, 2], mom[:, 1] / mom[:, 2]
    vtx = pv[event]
    z_ecal = geometry.z
    x = vtx[:, 0] + tx * (z_ecal - vtx[:, 2])
    y = vtx[:, 1] + ty * (z_ecal - vtx[:, 2])
    energy = np.sqrt((mom**2).sum(1))
    keep = geometry.in_acceptance(x, y)
    # order photons by event, then by decreasing energy (the seed of a cluster is its most energetic photon)
    order = np.lexsort((-energy[keep], event[keep]))
    event, x, y, tx, ty, energy = (a[keep][order] for a in (event, x, y, tx, ty, energy))
    n_photons = np.bincount(event, minlength=n_events)
    starts = np.cumsum(n_photons) - n_photons

    # merging: friends-of-friends on photon pairs closer than merge_scale cells
    cell = geometry.cell_size(x, y)
    a, b = event_pairs(starts, n_photons)
    close = np.hypot(x[a] - x[b], y[a] - y[b]) < cfg.merge_scale * np.maximum(cell[a], cell[b])
    n = len(x)
    graph = coo_matrix((np.ones(int(close.sum()), dtype=np.int8), (a[close], b[close])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    seed = np.full(n, n, dtype=np.int64)
    np.minimum.at(seed, label, np.arange(n))
    seed_of = seed[label]  # each photon -> index of its group's seed (most energetic photon)
    group_seeds, group_of = np.unique(seed_of, return_inverse=True)

    e_true = np.bincount(group_of, weights=energy)
    x_true = np.bincount(group_of, weights=energy * x) / e_true
    y_true = np.bincount(group_of, weights=energy * y) / e_true
    n_in = np.bincount(group_of)
    g_event = event[group_seeds]

    e_reco = e_true * (1.0 + energy_resolution(e_true, cfg) * rng.standard_normal(len(e_true)))
    leak = rng.random(len(e_true)) < cfg.tail_fraction
    e_reco = e_reco * np.where(leak, np.clip(1.0 - rng.exponential(cfg.tail_mean, len(e_true)), 0.5, 1.0), 1.0)
    sig = position_resolution(e_true, geometry.cell_size(x_true, y_true), cfg)
    x_reco = x_true + sig * rng.standard_normal(len(e_true))
    y_reco = y_true + sig * rng.standard_normal(len(e_true))
    r = np.hypot(x_reco, y_reco)
    et = e_reco * r / np.hypot(r, z_ecal)
    passed = et > cfg.threshold_et

    n_clusters = np.bincount(g_event[passed], minlength=n_events)
    # index of each passing group within its event's cluster list, -1 for groups below threshold
    rank = np.cumsum(passed) - 1
    first_of_event = np.cumsum(n_clusters) - n_clusters
    index_in_event = np.where(passed, rank - first_of_event[g_event], -1)
    photon_cluster = index_in_event[group_of]

    f32 = np.float32
    photons = {
        "photon_x": x.astype(f32), "photon_y": y.astype(f32),
        "photon_tx": tx.astype(f32), "photon_ty": ty.astype(f32),
        "photon_E": energy.astype(f32), "photon_clusterIndex": photon_cluster.astype(np.int32),
    }
    clusters = {
        "cluster_x": x_reco[passed].astype(f32), "cluster_y": y_reco[passed].astype(f32),
        "cluster_E": e_reco[passed].astype(f32), "cluster_nPhotons": n_in[passed].astype(np.int32),
    }
    return EcalEvents(n_photons.astype(np.int32), photons, n_clusters.astype(np.int32), clusters)


def to_columns(ev: EcalEvents, first_event: int) -> dict[str, np.ndarray | ak.Array]:
    """Contract-named columns (jagged photon and cluster lists per event)."""
    out: dict[str, np.ndarray | ak.Array] = {
        "evtNumber": np.arange(first_event, first_event + len(ev.n_photons), dtype=np.int64),
        "nPhotons": ev.n_photons,
    }
    for name in ("photon_x", "photon_y", "photon_tx", "photon_ty", "photon_E"):
        out[name] = ak.unflatten(ev.photons[name], ev.n_photons)
    out["nClusters"] = ev.n_clusters
    for name, arr in ev.clusters.items():
        out[name] = ak.unflatten(arr, ev.n_clusters)
    out["photon_clusterIndex"] = ak.unflatten(ev.photons["photon_clusterIndex"], ev.n_photons)
    return out


def chunks(n: int, chunk_size: int, rng_for: Callable[[int], np.random.Generator],
           options: dict | None = None) -> Iterator[dict[str, np.ndarray | ak.Array]]:
    """``n`` events in chunks of ``chunk_size``; chunk ``i`` draws only from ``rng_for(i)``. The geometry is
    ``options["detector"]["ecal"]`` (the configured ``detector`` section; defaults where absent)."""
    cfg = config_from(options)
    geometry = ecal_geometry(options)
    for i, start in enumerate(range(0, n, chunk_size)):
        size = min(chunk_size, n - start)
        yield to_columns(simulate(size, rng_for(i), cfg, geometry), start)
