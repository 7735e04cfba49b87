"""Reference tracking simulation: contract, reproducibility and physics against its own truth functions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flashsim.detsim import kinematics as kin
from flashsim.detsim import samples as registry
from flashsim.detsim import tracking
from flashsim.detsim import truth as tr
from flashsim.io.contract import TRACKING

N = 200_000


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    return tracking.make_chunk(0, N, N, registry.rng_factory(7, "tracking")(0))


@pytest.fixture(scope="module")
def p_true(sample) -> np.ndarray:
    return np.sqrt(sample["mc_px"].astype(float) ** 2 + sample["mc_py"] ** 2 + sample["mc_pz"] ** 2)


def test_every_contract_column_with_its_dtype(sample):
    assert list(sample) == TRACKING.names() or set(sample) == set(TRACKING.names())
    for c in TRACKING.columns:
        assert sample[c.name].dtype == np.dtype(c.dtype), c.name
        assert len(sample[c.name]) == N


def test_chunks_are_independent_and_reproducible():
    rng_for = registry.rng_factory(3, "tracking")
    stream = list(tracking.chunks(25_000, 10_000, rng_for, {}))
    assert [len(c["p"]) for c in stream] == [10_000, 10_000, 5_000]
    alone = tracking.make_chunk(2, 5_000, 10_000, registry.rng_factory(3, "tracking")(2))
    for name, val in stream[2].items():
        np.testing.assert_array_equal(val, alone[name], err_msg=name)
    other = tracking.make_chunk(2, 5_000, 10_000, registry.rng_factory(4, "tracking")(2))
    assert not np.array_equal(other["mc_px"], alone["mc_px"])
    # event numbers are unique across chunks, and an event never straddles two chunks' numbering
    evts = [np.unique(c["evtNumber"]) for c in stream]
    assert len(np.intersect1d(evts[0], evts[1])) == 0


def test_response_does_not_depend_on_the_cache_block(monkeypatch):
    gen = kin.generate_particles(np.random.default_rng(1), 5000, 0, 5000)
    a = tracking.respond(gen, np.random.default_rng(2))
    monkeypatch.setattr(tracking, "BLOCK", 1024)
    b = tracking.respond(gen, np.random.default_rng(2))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_generator_level_ranges_and_species_mix(sample, p_true):
    assert p_true.min() >= kin.P_MIN * 0.999 and p_true.max() <= kin.P_MAX * 1.001
    eta = np.arcsinh(sample["mc_pz"] / np.hypot(sample["mc_px"], sample["mc_py"]))
    assert eta.min() >= kin.ETA_MIN - 1e-3 and eta.max() <= kin.ETA_MAX + 1e-3
    frac = np.bincount(kin.species_index(sample["mcID"]), minlength=5) / N
    np.testing.assert_allclose(frac, kin.FRACTIONS / kin.FRACTIONS.sum(), atol=0.005)
    assert set(np.unique(sample["mc_charge"])) == {-1, 1}
    np.testing.assert_array_equal(kin.charge_of(sample["mcID"]), sample["mc_charge"])
    # falling spectrum: the density per GeV/c at 2-4 GeV/c is over 10 times that at 20-40 GeV/c
    assert np.sum(p_true < 4000) / 2 > 10 * np.sum((p_true > 20000) & (p_true < 40000)) / 20
    # several particles per event, occupancy and PVs per event constant within the event
    ev = sample["evtNumber"]
    first = np.r_[True, ev[1:] != ev[:-1]]
    assert first.sum() < N / 5
    assert np.all(np.diff(ev) >= 0)
    for col in ("nTracks", "nPVs"):
        starts = sample[col][first]
        assert np.array_equal(np.repeat(starts, np.diff(np.r_[np.flatnonzero(first), N])), sample[col])


def _binned(x, bins):
    return [(lo, hi, (x >= lo) & (x < hi)) for lo, hi in itertools.pairwise(bins)]


def test_acceptance_and_types_follow_the_truth(sample, p_true):
    acc_p = tr.acceptance_probability(sample)
    probs = tr.track_type_probabilities(sample)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    cls = tr.type_index(sample["type"])
    for lo, hi, sel in _binned(p_true, [2000, 3000, 5000, 10000, 30000, 200001]):
        n = sel.sum()
        obs, exp = sample["acceptance"][sel].mean(), acc_p[sel].mean()
        assert abs(obs - exp) < 5 * np.sqrt(exp * (1 - exp) / n) + 1e-3, (lo, hi, obs, exp)
        for c in range(4):
            o, e = (cls[sel] == c).mean(), probs[sel, c].mean()
            assert abs(o - e) < 5 * np.sqrt(max(e * (1 - e), 1e-4) / n), (lo, hi, c, o, e)
    # conditional on acceptance the classes sum to 1 too, and reconstructed tracks are all accepted
    cond = tr.track_type_probabilities(sample, given_acceptance=True)
    np.testing.assert_allclose(cond.sum(axis=1)[acc_p > 1e-3], 1, atol=1e-4)
    assert np.all(sample["acceptance"][sample["type"] > 0] == 1)


def test_efficiency_rises_with_momentum_and_falls_with_occupancy(sample, p_true):
    k = tr.derive(sample)
    e_long = tr.reconstruction_efficiencies(k)[0]
    low, high = p_true < 3000, p_true > 20000
    assert e_long[high].mean() > e_long[low].mean() + 0.03
    long_ = sample["type"] == 3
    assert long_[high].mean() > long_[low].mean() + 0.1
    quiet, busy = sample["nTracks"] < 80, sample["nTracks"] > 250
    assert e_long[quiet].mean() > e_long[busy].mean()
    # low momentum charged particles are swept out of the T stations by the dipole: fewer long, more upstream
    up = sample["type"] == 4
    assert up[low].mean() > up[high].mean()


def test_reco_columns_nan_exactly_where_not_reconstructed(sample):
    none = sample["type"] == 0
    assert 0.02 < none.mean() < 0.5
    for c in TRACKING.columns:
        if "NaN if type 0" in c.doc:
            v = sample[c.name]
            assert np.isnan(v[none]).all() and np.isfinite(v[~none]).all(), c.name
    for s in ("x", "y", "z", "tx", "ty"):
        assert np.isfinite(sample[f"true_{s}_ClosestToBeam"]).all()
    gp = sample["ghostProb"][~none]
    assert (gp >= 0).all() and (gp <= 1).all()
    assert (sample["nDoF"][~none] >= 3).all() and (sample["chi2PerDoF"][~none] > 0).all()


def test_covariance_positive_definite_and_pulls(sample):
    rec = sample["type"] > 0
    cov = np.empty((rec.sum(), 5, 5))
    for i in range(5):
        for j in range(i, 5):
            cov[:, i, j] = cov[:, j, i] = sample[f"cov_ClosestToBeam_{i}_{j}"][rec]
    assert np.all(np.linalg.eigvalsh(cov)[:, 0] > 0)
    np.linalg.cholesky(cov)  # raises if any is not positive definite
    # the reported matrices scatter around the truth's expected covariance (log-normal hit quality)
    exp_cov = tr.expected_covariance({k: v[rec] for k, v in sample.items()}, sample["type"][rec])
    ratio = cov / exp_cov  # h^2 / E[h^2]: one factor per track, mean 1
    assert np.mean(ratio[:, 0, 0]) == pytest.approx(1, abs=0.01)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1], ratio.shape), rtol=2e-3)
    # core pulls are unit normal (the reported covariance ignores the hard-scatter tail)
    long_ = sample["type"][rec] == 3
    for s, i in (("x", 0), ("tx", 2)):
        pull = ((sample[f"{s}_ClosestToBeam"] - sample[f"true_{s}_ClosestToBeam"])[rec] / np.sqrt(cov[:, i, i]))
        mad = np.median(np.abs(pull[long_])) / 0.6745
        assert 0.95 < mad < 1.1, (s, mad)
        assert np.mean(np.abs(pull[long_]) > 5) > 1e-3  # non-Gaussian tails


def test_resolution_scales_like_one_over_p_and_matches_truth(sample, p_true):
    long_ = sample["type"] == 3
    k = tr.derive(sample)
    widths = []
    for lo, hi, sel in _binned(p_true, [2000, 2500, 4000, 8000, 20000, 60000]):
        sel &= long_
        d = (sample["tx_ClosestToBeam"] - sample["true_tx_ClosestToBeam"])[sel]
        truth_std = tr.residual_std(k, 3)["tx"][sel]
        assert np.std(d) == pytest.approx(np.sqrt(np.mean(truth_std**2)), rel=0.08), (lo, hi)
        widths.append(np.std(d) * (lo + hi) / 2)
    # sigma * p roughly constant while multiple scattering dominates (2-8 GeV/c), then the constant term shows
    assert widths[0] == pytest.approx(widths[1], rel=0.25)
    assert widths[-1] > 1.5 * widths[0]
    # q/p: electrons' bremsstrahlung biases 1/p upwards (momentum measured low), as the truth says
    e = long_ & (np.abs(sample["mcID"]) == 11)
    qop_res = (sample["mc_charge"] / sample["p"] - sample["mc_charge"] / p_true)[e]
    exp_mean = tr.residual_mean(k, 3)["qop"][e]
    assert np.mean(qop_res * sample["mc_charge"][e]) > 0
    assert np.mean(qop_res) == pytest.approx(np.mean(exp_mean), rel=0.2)


def test_truth_is_reproducible_from_float32_columns(sample, tmp_path):
    import uproot

    from flashsim.detsim import writer

    path = tmp_path / "t.root"
    writer.write_root(path, [sample], TRACKING)
    back = uproot.open(path)["Tracking"].arrays(library="np")
    np.testing.assert_array_equal(tr.acceptance_probability(back), tr.acceptance_probability(sample))
    np.testing.assert_array_equal(tr.track_type_probabilities(back), tr.track_type_probabilities(sample))
    for s in ("x", "y", "z", "tx", "ty"):
        np.testing.assert_array_equal(tr.true_state(back)[f"true_{s}_ClosestToBeam"], back[f"true_{s}_ClosestToBeam"])
