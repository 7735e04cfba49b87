"""Sample kind ``signal``: Lb0 -> Lc+ mu- nu, Lc+ -> p K- pi+ (and charge conjugate), with the reference response.

Each Lb0 comes from its own pp collision (PV from the luminous region, occupancy as in minimum bias), flies
(proper decay length c tau = 0.441 mm), decays by three-body phase space to Lc+ mu- anti-nu; the Lc+ flies
(c tau = 0.060 mm) and decays by phase space to p K- pi+. A generator-level cut like LHCb's "daughters in
acceptance" keeps decays whose four charged daughters all have 1.5 < eta < 5.5 and 2 < p < 200 GeV/c (the domain
of the tracking sample). Each decay gives four entries (p, K, pi, mu: ``signal_role`` 1-4) with the tracking
response of :mod:`flashsim.detsim.tracking` and the PID response of :mod:`flashsim.detsim.pid` (NaN, and
isMuon 0, for tracks that were not reconstructed). ``size`` counts Lb0 decays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from flashsim.detsim import kinematics as kin
from flashsim.detsim import tracking

F = np.float32
M_LB, CTAU_LB = 5619.60, 0.4407  # MeV/c^2, mm
M_LC, CTAU_LC = 2286.46, 0.0599
M_NU = 0.0
PT_SHAPE, PT_SCALE = 2.2, 2500.0  # Lb0 transverse momentum ~ Gamma(shape, scale) MeV/c
ETA_RANGE = (1.8, 5.2)
# (role, species index, PDG id for Lb0 (not anti), mother PDG id)
DAUGHTERS = ((1, 4, 2212, 4122), (2, 3, -321, 4122), (3, 2, 211, 4122), (4, 1, 13, 5122))
M_P, M_K, M_PI, M_MU = (kin.MASS[s] for s in (4, 3, 2, 1))


def _in_domain(p4: np.ndarray) -> np.ndarray:
    p = np.sqrt(np.sum(p4[:, :3] ** 2, axis=1))
    eta = np.arctanh(p4[:, 2] / p)
    return (p > kin.P_MIN) & (p < kin.P_MAX) & (eta > kin.ETA_MIN) & (eta < kin.ETA_MAX)


def generate_decays(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` accepted decays: Lb four-momenta, vertices and the four daughters' four-momenta (float64, (n, ...))."""
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    while have < n:
        m = 2 * (n - have) + 64  # a few tries: about a third of the decays pass the daughters' cut
        pt = rng.gamma(PT_SHAPE, PT_SCALE, m)
        eta = kin.sample_eta(rng, m, *ETA_RANGE).astype(np.float64)
        phi = 2 * np.pi * rng.random(m)
        lb = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), np.zeros(m)], axis=1)
        lb[:, 3] = np.sqrt(np.sum(lb[:, :3] ** 2, axis=1) + M_LB**2)
        lc, mu, _nu = kin.three_body_decay(rng, lb, M_LB, M_LC, M_MU, M_NU)
        # three_body_decay orders the daughters (1, 2, 3) = (Lc, mu, nu)
        pp, kk, pi = kin.three_body_decay(rng, lc, M_LC, M_P, M_K, M_PI)
        flight = rng.standard_exponential((2, m))
        ok = _in_domain(pp) & _in_domain(kk) & _in_domain(pi) & _in_domain(mu)
        parts.append({"lb": lb[ok], "lc": lc[ok], "p": pp[ok], "K": kk[ok], "pi": pi[ok], "mu": mu[ok],
                      "flight_lb": flight[0][ok], "flight_lc": flight[1][ok]})
        have += int(ok.sum())
    out = {k: np.concatenate([d[k] for d in parts])[:n] for k in parts[0]}
    return out


def make_chunk(i: int, n: int, chunk_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Chunk ``i``: ``n`` Lb0 decays, 4 n entries (p, K, pi, mu of each decay, in that order)."""
    from flashsim.detsim import pid

    n_pvs, n_tracks = kin.sample_occupancy(rng, n)
    pv = np.stack(kin.sample_pv(rng, n), axis=1).astype(np.float64)
    dec = generate_decays(rng, n)
    anti = rng.random(n) < 0.5  # Lb0-bar: every charge and PDG id flips
    sign = np.where(anti, -1, 1)
    # vertices: Lb decays at PV + (beta gamma c tau) * direction, Lc likewise from there
    lb, lc = dec["lb"], dec["lc"]
    lb_vtx = pv + (dec["flight_lb"] * CTAU_LB / M_LB)[:, None] * lb[:, :3]
    lc_vtx = lb_vtx + (dec["flight_lc"] * CTAU_LC / M_LC)[:, None] * lc[:, :3]
    p4 = np.stack([dec["p"], dec["K"], dec["pi"], dec["mu"]], axis=1)  # (n, 4 daughters, 4)
    origin = np.stack([lc_vtx, lc_vtx, lc_vtx, lb_vtx], axis=1)  # (n, 4, 3)
    pdg0 = np.array([d[2] for d in DAUGHTERS])
    mother0 = np.array([d[3] for d in DAUGHTERS])
    pdg = (pdg0[None, :] * sign[:, None]).astype(np.int32).ravel()
    rows = 4 * n
    rep = lambda a: np.repeat(a, 4)  # noqa: E731 - per-decay value on each of its four rows
    gen = {
        "evtNumber": rep(np.int64(i) * np.int64(chunk_size) + np.arange(n, dtype=np.int64)),
        "nTracks": rep(n_tracks), "nPVs": rep(n_pvs),
        "mc_x": origin[:, :, 0].ravel().astype(F), "mc_y": origin[:, :, 1].ravel().astype(F),
        "mc_z": origin[:, :, 2].ravel().astype(F),
        "mc_px": p4[:, :, 0].ravel().astype(F), "mc_py": p4[:, :, 1].ravel().astype(F),
        "mc_pz": p4[:, :, 2].ravel().astype(F),
        "mc_charge": kin.charge_of(pdg), "mcID": pdg,
        "pv_x": rep(pv[:, 0]).astype(F), "pv_y": rep(pv[:, 1]).astype(F), "pv_z": rep(pv[:, 2]).astype(F),
        "signal_role": np.tile(np.array([d[0] for d in DAUGHTERS], dtype=np.int32), n),
        "mother_ID": (mother0[None, :] * sign[:, None]).astype(np.int32).ravel(),
    }
    reco = tracking.respond(gen, rng)
    p = np.sqrt(gen["mc_px"].astype(np.float64) ** 2 + gen["mc_py"] ** 2 + gen["mc_pz"] ** 2)
    eta = np.arctanh(gen["mc_pz"] / p)
    pid_cols = pid.respond(gen["mcID"], p, eta, gen["nTracks"], gen["mc_charge"], rng)
    lost = reco["type"] == 0
    for name, val in pid_cols.items():
        if name == "isMuon":
            val[lost] = 0
        else:
            val[lost] = np.nan
    out = {**gen, **reco, **pid_cols}
    assert len(out["p"]) == rows
    return out


ENTRIES_PER_UNIT = len(DAUGHTERS)  # file entries per unit of ``size`` (one Lb0 decay)
UNIT = "decays"


def chunks(n: int, chunk_size: int, rng_for: Callable[[int], np.random.Generator],
           options: dict) -> Iterator[dict[str, np.ndarray]]:
    """The registry's entry point: ``n`` Lb0 decays (4 n entries), ``chunk_size`` entries (chunk_size / 4
    decays) per chunk."""
    per_chunk = max(1, chunk_size // ENTRIES_PER_UNIT)
    for i, start in enumerate(range(0, n, per_chunk)):
        yield make_chunk(i, min(per_chunk, n - start), per_chunk, rng_for(i))
