"""Sample kind ``tracking``: generated charged particles and the reference tracking response.

:func:`respond` samples acceptance, track type, the reconstructed closest-to-beam state with its covariance,
chi2/ndof, nDoF and ghost probability from the truth model of :mod:`flashsim.detsim.truth`; the ``signal``
kind reuses it for its decay products.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from flashsim.detsim import kinematics as kin
from flashsim.detsim import truth as tr

F = tr.F
NAN = F(np.nan)
_BASE_NDOF = np.array([12, 0, 6], dtype=np.int32)  # + 2 * VELO stations for long/upstream (long: UT + T hits)
_GHOST_TYPE_OFFSET = np.array([0.0, 0.8, 0.5], dtype=F)


def _normalised_rows(c: dict[tuple[int, int], np.ndarray]) -> dict[tuple[int, int], np.ndarray]:
    """Add the diagonal of the unit-row correlation factor to the couplings."""
    out = dict(c)
    out[(0, 0)] = np.ones_like(c[(1, 0)])
    for a in range(1, 5):
        s = c[(a, 0)] * c[(a, 0)]
        for b in range(1, a):
            s += c[(a, b)] * c[(a, b)]
        out[(a, a)] = np.sqrt(F(1) - s)
    return out


def respond(gen: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The tracking response to generator-level columns: every reconstruction column of the contract.

    Everything is computed for all rows (cheaper than gathering the reconstructed ones) and set to NaN where
    the type is 0.
    """
    k = tr.derive(gen)
    n = len(k.p)
    out: dict[str, np.ndarray] = tr.true_state(k)

    # stations crossed, acceptance, pattern recognition
    v, u, t = tr.station_probabilities(k)
    e_l, e_u, e_d = tr.reconstruction_efficiencies(k)
    r = rng.random((9, n), dtype=F)  # 3 stations, 3 pattern recognitions, tail, brem, nDoF
    hv, hu, ht = r[0] < v, r[1] < u, r[2] < t
    out["acceptance"] = ((hv.view(np.int8) + hu.view(np.int8) + ht.view(np.int8)) >= 2).astype(np.int32)
    is_long = hv & ht & (r[3] < e_l)
    is_up = ~is_long & hv & hu & (r[4] < e_u)
    is_down = ~is_long & ~is_up & hu & ht & (r[5] < e_d)
    up8, down8 = is_up.view(np.int8), is_down.view(np.int8)
    j = (up8 + 2 * down8).astype(np.intp)  # 0 long (or none), 1 upstream, 2 downstream
    out["type"] = (3 * is_long.view(np.int8) + 4 * up8 + 5 * down8).astype(np.int32)
    none = ~(is_long | is_up | is_down)

    # residuals: sigma_a * sum_b R[a, b] z_b, scaled by the hit quality h and the hard-scatter tail
    z = rng.standard_normal((8, n), dtype=F)  # 5 state components, hit quality, chi2, ghost noise
    par = tr.resolution_by_index(k, j, correlation=False)
    h = np.exp(F(tr.QUALITY_SIGMA) * z[5])
    tail = r[6] < par["tail_fraction"]
    scale = h * np.where(tail, F(tr.TAIL_SCALE), F(1))
    sig = [par["sigma_x"], par["sigma_y"], par["sigma_tx"], par["sigma_ty"], par["sigma_qop"]]
    L = _normalised_rows(tr.correlation_couplings(k, j))
    res = []
    for a in range(5):
        acc = L[(a, a)] * z[a]
        for b in range(a):
            acc += L[(a, b)] * z[b]
        res.append(sig[a] * scale * acc)
    ts = out
    qop = k.q / k.p
    brem = (k.species == 0) & (r[7] < F(tr.BREM_PROB))
    qop_r = qop + res[4]
    if brem.any():
        b = np.flatnonzero(brem)
        qop_r[b] = qop[b] * np.exp(rng.standard_exponential(len(b), dtype=F) * F(tr.BREM_MEAN)) + res[4][b]
    p_r = F(1) / np.abs(qop_r)
    reco = {
        "x_ClosestToBeam": ts["true_x_ClosestToBeam"] + res[0],
        "y_ClosestToBeam": ts["true_y_ClosestToBeam"] + res[1],
        # the reconstructed line's closest approach moves along z by the residual's projection on the slope
        "z_ClosestToBeam": k.zc - (res[0] * k.tx + res[1] * k.ty) / (k.t * k.t),
        "tx_ClosestToBeam": k.tx + res[2],
        "ty_ClosestToBeam": k.ty + res[3],
        "p": p_r,
    }
    # fit quality: nDoF from the hits on the track; chi2/ndof ~ chi2(nDoF)/nDoF (Wilson-Hilferty), worse with
    # a hard scatter and poor hits
    velo_st = np.clip(F(3) + _velo_length(k) * F(1 / 45), F(3), F(23)).astype(np.int32)
    ndof = _BASE_NDOF[j] + np.where(j < 2, 2 * velo_st, 0) + (r[8] * F(5)).astype(np.int32) - 2
    ndof_f = np.maximum(ndof, 3).astype(F)
    c = F(2 / 9) / ndof_f
    wh = F(1) - c + z[6] * np.sqrt(c)
    chi2 = wh * wh * wh * (F(0.85) + F(0.15) * h * h) * np.where(tail, F(1.7), F(1))
    logit = (F(-4.2) + F(1.8) * (chi2 - F(1)) + F(0.005) * k.n_tracks
             - F(0.6) * np.log(p_r * F(1e-4)) + _GHOST_TYPE_OFFSET[j] + F(0.5) * z[7])
    reco.update({"chi2PerDoF": chi2, "nDoF": ndof_f, "ghostProb": tr.logistic(logit)})
    # reported covariance h^2 * D R R^T D: the fit knows the hit quality, not the hard scatter
    hs = [s * h for s in sig]
    for a in range(5):
        for b in range(a, 5):
            acc = L[(a, 0)] * L[(b, 0)]
            for c_ in range(1, a + 1):
                acc += L[(a, c_)] * L[(b, c_)]
            reco[f"cov_ClosestToBeam_{a}_{b}"] = hs[a] * hs[b] * acc
    for name, val in reco.items():
        val[none] = NAN
        out[name] = val
    return out


def _velo_length(k: tr.Kin) -> np.ndarray:
    """z length (mm) of the trajectory inside the VELO's sensitive radii (sets the number of VELO stations)."""
    inv_t = F(1) / k.t
    lo = np.maximum(np.maximum(k.z0, k.zc + F(tr.VELO_R_IN) * inv_t), F(tr.VELO_Z_MIN))
    hi = np.minimum(k.zc + F(tr.VELO_R_OUT) * inv_t, F(tr.VELO_Z_MAX))
    return np.maximum(hi - lo, F(0))


def make_chunk(i: int, n: int, chunk_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Chunk ``i`` (``n`` particles) of the tracking sample."""
    gen = kin.generate_particles(rng, n, i, chunk_size)
    return {**gen, **respond(gen, rng)}


def chunks(n: int, chunk_size: int, rng_for: Callable[[int], np.random.Generator],
           options: dict) -> Iterator[dict[str, np.ndarray]]:
    """The registry's entry point: ``n`` particles in chunks of ``chunk_size``."""
    for i, start in enumerate(range(0, n, chunk_size)):
        yield make_chunk(i, min(chunk_size, n - start), chunk_size, rng_for(i))
