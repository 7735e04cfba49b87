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
_BASE_NDOF = np.array([12, 0, 11], dtype=np.int32)  # + 2 * VELO stations for long/upstream (long: UT + T hits)
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


BLOCK = 32768  # rows processed together: the temporaries stay in the CPU cache (results do not depend on it)
GEN_COLUMNS = ("mc_x", "mc_y", "mc_z", "mc_px", "mc_py", "mc_pz", "mc_charge", "mcID", "nTracks")


def respond(gen: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The tracking response to generator-level columns: every reconstruction column of the contract.

    All random numbers are drawn up front (9 uniforms and 8 normals per particle, whatever the outcome), then
    the response is computed in cache-sized blocks; everything is computed for all rows and set to NaN where
    the type is 0 (cheaper than gathering).
    """
    n = len(gen["mc_px"])
    r = rng.random((9, n), dtype=F)  # 3 stations, 3 pattern recognitions, tail, brem, nDoF
    z = rng.standard_normal((8, n), dtype=F)  # 5 state components, hit quality, chi2, ghost noise
    if n <= BLOCK:
        return _respond_block(gen, r, z)
    out: dict[str, np.ndarray] = {}
    for s in range(0, n, BLOCK):
        e = min(s + BLOCK, n)
        blk = _respond_block({c: gen[c][s:e] for c in GEN_COLUMNS}, r[:, s:e], z[:, s:e])
        if not out:
            out = {name: np.empty(n, dtype=val.dtype) for name, val in blk.items()}
        for name, val in blk.items():
            out[name][s:e] = val
    return out


def _respond_block(gen: Mapping[str, np.ndarray], r: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`respond` for one block, given its uniforms ``r`` (9, n) and normals ``z`` (8, n)."""
    k = tr.derive(gen)
    out: dict[str, np.ndarray] = tr.true_state(k)

    # stations crossed, acceptance, pattern recognition
    v, u, t, vlen = tr.station_details(k)
    e_l, e_u, e_d = tr.reconstruction_efficiencies(k)
    hv, hu, ht = r[0] < v, r[1] < u, r[2] < t
    out["acceptance"] = ((hv.view(np.int8) + hu.view(np.int8) + ht.view(np.int8)) >= 2).astype(np.int32)
    is_long = hv & ht & (r[3] < e_l)
    is_up = ~is_long & hv & hu & (r[4] < e_u)
    is_down = ~is_long & ~is_up & hu & ht & (r[5] < e_d)
    up8, down8 = is_up.view(np.int8), is_down.view(np.int8)
    j = (up8 + 2 * down8).astype(np.intp)  # 0 long (or none), 1 upstream, 2 downstream
    out["type"] = (3 * is_long.view(np.int8) + 4 * up8 + 5 * down8).astype(np.int32)
    none = np.flatnonzero(~(is_long | is_up | is_down))

    # residuals: sigma_a * sum_b R[a, b] z_b, scaled by the hit quality h and the hard-scatter tail
    par = tr.resolution_by_index(k, j, correlation=False)
    h = np.exp(F(tr.QUALITY_SIGMA) * z[5])
    tail = r[6] < par["tail_fraction"]
    scale = np.where(tail, F(tr.TAIL_SCALE), F(1))
    scale *= h
    hs = [par[f"sigma_{s}"] * h for s in tr.STATE_VARS]  # core widths of this track (what its fit reports)
    L = _normalised_rows(tr.correlation_couplings(k, j))
    res = []
    for a in range(5):
        acc = L[(a, a)] * z[a]
        for b in range(a):
            acc += L[(a, b)] * z[b]
        acc *= par[f"sigma_{tr.STATE_VARS[a]}"]
        acc *= scale
        res.append(acc)
    qop_r = k.q / k.p
    # electrons: bremsstrahlung before the magnet; the brem uniform, rescaled, gives the exponential loss
    brem = np.flatnonzero((k.species == 0) & (r[7] < F(tr.BREM_PROB)))
    if len(brem):
        b = -np.log(np.maximum(r[7][brem] * F(1 / tr.BREM_PROB), F(1e-30))) * F(tr.BREM_MEAN)
        qop_r[brem] *= np.exp(b)
    qop_r += res[4]
    p_r = F(1) / np.abs(qop_r)
    x_r = out["true_x_ClosestToBeam"] + res[0]
    y_r = out["true_y_ClosestToBeam"] + res[1]
    # the reconstructed line's closest approach moves along z by the residual's projection on the slope
    z_r = res[0] * k.tx
    z_r += res[1] * k.ty
    z_r /= k.t * k.t
    np.subtract(k.zc, z_r, out=z_r)
    reco = {"x_ClosestToBeam": x_r, "y_ClosestToBeam": y_r, "z_ClosestToBeam": z_r,
            "tx_ClosestToBeam": k.tx + res[2], "ty_ClosestToBeam": k.ty + res[3], "p": p_r}
    # fit quality: nDoF from the hits on the track; chi2/ndof ~ chi2(nDoF)/nDoF (Wilson-Hilferty
    # approximation), worse with a hard scatter and poor hits
    velo_st = np.clip(F(3) + vlen * F(1 / 45), F(3), F(23)).astype(np.int32)
    ndof = _BASE_NDOF[j] + np.where(j < 2, 2 * velo_st, 0) + (r[8] * F(5)).astype(np.int32) - 2
    ndof_f = np.maximum(ndof, 3).astype(F)
    c = F(2 / 9) / ndof_f
    wh = np.sqrt(c)
    wh *= z[6]
    wh += F(1) - c
    chi2 = wh * wh * wh * (F(0.85) + F(0.15) * h * h) * np.where(tail, F(1.7), F(1))
    logit = F(1.8) * chi2 + F(-4.2 - 1.8) + F(0.005) * k.n_tracks - F(0.6) * np.log(p_r * F(1e-4))
    logit += _GHOST_TYPE_OFFSET[j]
    logit += F(0.5) * z[7]
    reco.update({"chi2PerDoF": chi2, "nDoF": ndof_f, "ghostProb": tr.logistic(logit)})
    # reported covariance h^2 * D R R^T D: the fit knows the hit quality, not the hard scatter
    for a in range(5):
        for b in range(a, 5):
            if a == b:
                cov = hs[a] * hs[a]
            else:
                acc = L[(a, 0)] * L[(b, 0)]
                for c_ in range(1, a + 1):
                    acc += L[(a, c_)] * L[(b, c_)]
                cov = acc
                cov *= hs[a]
                cov *= hs[b]
            reco[f"cov_ClosestToBeam_{a}_{b}"] = cov
    for name, val in reco.items():
        val[none] = NAN
        out[name] = val
    return out


def make_chunk(i: int, n: int, chunk_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Chunk ``i`` (``n`` particles) of the tracking sample."""
    gen = kin.generate_particles(rng, n, i, chunk_size)
    return {**gen, **respond(gen, rng)}


def chunks(n: int, chunk_size: int, rng_for: Callable[[int], np.random.Generator],
           options: dict) -> Iterator[dict[str, np.ndarray]]:
    """The registry's entry point: ``n`` particles in chunks of ``chunk_size``."""
    for i, start in enumerate(range(0, n, chunk_size)):
        yield make_chunk(i, min(chunk_size, n - start), chunk_size, rng_for(i))
