"""Sample kind ``ghost``: reconstructed long tracks, real or ghost, with 17 track-quality features.

The generative model (class-conditional densities with closed forms) lives in :mod:`flashsim.detsim.truth`, whose
:func:`~flashsim.detsim.truth.ghost_probability` is the exact posterior that ``true_ghostProb`` holds: the best
any classifier of the 17 features can do (a ghost MLP is compared with it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from flashsim.detsim import kinematics as kin
from flashsim.detsim import truth as tr

F = np.float32
STORED_FRACTION = 0.15  # long tracks stored per event ~ 1 + Poisson(STORED_FRACTION * nTracks)


def make_chunk(i: int, n: int, chunk_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Chunk ``i`` (``n`` tracks) of the ghost sample."""
    ev = kin.sample_events(rng, n, STORED_FRACTION)
    e = ev.particle_event
    n_tracks, n_pvs = ev.n_tracks[e], ev.n_pvs[e]
    eta = kin.sample_eta(rng, n, 1.8, 5.2)
    ghost = rng.random(n) < 1.0 / (1.0 + np.exp(-tr.ghost_prior_logit(n_tracks, eta)))
    u = rng.random(n)
    p = np.empty(n)
    for cls in (0, 1):
        sel = ghost == bool(cls)
        p[sel] = kin.momentum_from_uniform(u[sel], *tr.GHOST_SPECTRUM[cls])
    pick = lambda pair: np.where(ghost, pair[1], pair[0])  # noqa: E731 - class-dependent parameter
    n_velo = 6 + rng.poisson(tr.ghost_velo_lambda(eta, ghost))
    n_velo_holes = rng.poisson(pick(tr.GHOST_VELO_HOLES))
    n_ut = rng.binomial(4, pick(tr.GHOST_UT_EFF))
    n_ft = 9 + rng.binomial(3, pick(tr.GHOST_FT_EFF))
    n_ft_holes = rng.poisson(pick(tr.GHOST_FT_HOLES))
    velo_ndof = 2 * n_velo - 4
    t_ndof = n_ft - 4
    velo_chi2 = rng.standard_gamma(velo_ndof / 2) * (pick(tr.GHOST_VELO_CHI2_SCALE) * 2 / velo_ndof)
    t_chi2 = rng.standard_gamma(t_ndof / 2) * (pick(tr.GHOST_T_CHI2_SCALE) * 2 / t_ndof)
    match_chi2 = rng.standard_gamma(2.0, n) * tr.ghost_match_theta(p.astype(F), ghost)
    ndof = 2 * n_velo + n_ut + n_ft - 5
    chi2 = (velo_chi2 * velo_ndof + t_chi2 * t_ndof + match_chi2) / ndof
    eta32 = eta.astype(F)
    p32 = p.astype(F)
    cols = {
        "evtNumber": np.int64(i) * np.int64(chunk_size) + e,
        "chi2PerDoF": chi2, "nDoF": ndof, "veloChi2PerDoF": velo_chi2, "veloNDoF": velo_ndof,
        "TChi2PerDoF": t_chi2, "TNDoF": t_ndof, "matchChi2": match_chi2, "nVeloHits": n_velo, "nUTHits": n_ut,
        "nFTHits": n_ft, "nVeloHoles": n_velo_holes, "nFTHoles": n_ft_holes, "p": p32,
        "pt": p32 / np.cosh(eta32), "eta": eta32, "nTracks": n_tracks, "nPVs": n_pvs,
    }
    cols = {k: (v if k == "evtNumber" else np.asarray(v).astype(F)) for k, v in cols.items()}
    cols["isGhost"] = ghost.astype(np.int32)
    cols["true_ghostProb"] = tr.ghost_probability(cols).astype(F)  # from the float32 features, as read back
    return cols


def chunks(n: int, chunk_size: int, rng_for: Callable[[int], np.random.Generator],
           options: dict) -> Iterator[dict[str, np.ndarray]]:
    """The registry's entry point: ``n`` long tracks in chunks of ``chunk_size``."""
    for i, start in enumerate(range(0, n, chunk_size)):
        yield make_chunk(i, min(chunk_size, n - start), chunk_size, rng_for(i))
