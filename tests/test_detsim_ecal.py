"""Physics of the reference ECAL response: merging, threshold, resolution, contract columns, seeding."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from flashsim.detector import LHCB_ECAL
from flashsim.detsim import ecal
from flashsim.detsim.samples import kind_module, rng_factory
from flashsim.errors import ConfigError
from flashsim.io.contract import ECAL


@pytest.fixture(scope="module")
def events() -> ecal.EcalEvents:
    return ecal.simulate(20000, np.random.default_rng(7))


def _event_index(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_columns_follow_the_contract():
    cols = list(kind_module("ecal").chunks(2500, 1000, rng_factory(1, "ecal"), {"kind": "ecal"}))
    assert len(cols) == 3
    for chunk in cols:
        assert list(chunk) == ECAL.names()
        for c in ECAL.columns:
            arr = chunk[c.name]
            if c.jagged:
                assert isinstance(arr, ak.Array) and arr.ndim == 2
                assert str(ak.flatten(arr).type.content) == c.base_dtype
            else:
                assert arr.dtype == np.dtype(c.dtype)
        assert np.array_equal(ak.to_numpy(ak.num(chunk["photon_x"])), chunk["nPhotons"])
        assert np.array_equal(ak.to_numpy(ak.num(chunk["cluster_E"])), chunk["nClusters"])
    assert np.array_equal(np.concatenate([c["evtNumber"] for c in cols]), np.arange(2500))


def test_chunks_are_seeded_per_chunk():
    gen = kind_module("ecal").chunks
    a = list(gen(2000, 1000, rng_factory(3, "ecal"), {}))
    b = list(gen(2000, 1000, rng_factory(3, "ecal"), {}))
    other = rng_factory(4, "ecal")
    mixed = list(gen(2000, 1000, lambda i: other(i) if i == 0 else rng_factory(3, "ecal")(i), {}))
    def same(x, y) -> bool:
        return ak.to_list(x) == ak.to_list(y)

    for name in ECAL.names():
        assert same(a[1][name], b[1][name]) and same(a[0][name], b[0][name])
        assert same(a[1][name], mixed[1][name])  # chunk 1 does not depend on chunk 0's stream
    assert not same(a[0]["photon_E"], mixed[0]["photon_E"])


def test_multiplicities_are_realistic(events):
    n = events.n_photons
    assert 4 < n.mean() < 12 and (n == 0).any() and 25 <= n.max() <= 80
    assert (events.n_clusters != n).mean() > 0.3  # n photons give m != n clusters


def test_close_photons_merge(events):
    p, cfg = events.photons, ecal.EcalConfig()
    n = events.n_photons
    starts = np.cumsum(n) - n
    a, b = ecal.event_pairs(starts, n)
    cell = LHCB_ECAL.cell_size(p["photon_x"], p["photon_y"])
    dist = np.hypot(p["photon_x"][a] - p["photon_x"][b], p["photon_y"][a] - p["photon_y"][b])
    close = dist < cfg.merge_scale * np.maximum(cell[a], cell[b])
    ci = p["photon_clusterIndex"]
    both = close & (ci[a] >= 0)
    assert both.sum() > 100
    assert np.array_equal(ci[a][both], ci[b][both])  # close photons always share their cluster
    # far-apart photons of one event are usually resolved
    far = (dist > 3 * cfg.merge_scale * np.maximum(cell[a], cell[b])) & (ci[a] >= 0) & (ci[b] >= 0)
    assert (ci[a][far] != ci[b][far]).mean() > 0.99
    # cluster_nPhotons is the number of photons pointing to the cluster
    ev_p, ev_c = _event_index(n), _event_index(events.n_clusters)
    first_c = np.cumsum(events.n_clusters) - events.n_clusters
    kept = ci >= 0
    counts = np.bincount(first_c[ev_p[kept]] + ci[kept], minlength=len(ev_c))
    assert np.array_equal(counts, events.clusters["cluster_nPhotons"])
    assert (events.clusters["cluster_nPhotons"] > 1).mean() > 0.02


def test_energy_threshold(events):
    c, cfg = events.clusters, ecal.EcalConfig()
    r = np.hypot(c["cluster_x"], c["cluster_y"])
    et = c["cluster_E"] * r / np.hypot(r, LHCB_ECAL.z)
    assert et.min() > cfg.threshold_et * 0.999
    lost = events.photons["photon_clusterIndex"] < 0
    assert 0.05 < lost.mean() < 0.7
    pe = events.photons["photon_E"]
    assert np.median(pe[lost]) < 0.2 * np.median(pe[~lost])  # lost photons are the soft ones
    harder = ecal.simulate(20000, np.random.default_rng(7), ecal.EcalConfig(threshold_et=600.0))
    assert harder.n_clusters.sum() < 0.9 * events.n_clusters.sum()


@pytest.mark.parametrize("e_lo, e_hi", [(1500.0, 2500.0), (15000.0, 30000.0)])
def test_energy_and_position_resolution(e_lo, e_hi):
    cfg = ecal.EcalConfig(tail_fraction=0.0)
    ev = ecal.simulate(40000, np.random.default_rng(11), cfg)
    p, c = ev.photons, ev.clusters
    single = c["cluster_nPhotons"] == 1
    first_c = np.cumsum(ev.n_clusters) - ev.n_clusters
    ci = p["photon_clusterIndex"]
    k = ci >= 0
    flat = first_c[_event_index(ev.n_photons)[k]] + ci[k]
    pe, px, py = p["photon_E"][k], p["photon_x"][k], p["photon_y"][k]
    sel = single[flat] & (pe > e_lo) & (pe < e_hi)
    assert sel.sum() > 1000
    e_pull = (c["cluster_E"][flat][sel] / pe[sel] - 1) / ecal.energy_resolution(pe[sel], cfg)
    assert abs(np.mean(e_pull)) < 0.1 and abs(np.std(e_pull) - 1) < 0.06
    sig = ecal.position_resolution(pe[sel], LHCB_ECAL.cell_size(px[sel], py[sel]), cfg)
    for reco, true in ((c["cluster_x"], px), (c["cluster_y"], py)):
        pull = (reco[flat][sel] - true[sel]) / sig
        assert abs(np.std(pull) - 1) < 0.08


def test_stochastic_term_scales_as_inverse_sqrt_e():
    cfg = ecal.EcalConfig(res_b=0.0, res_c=0.0)
    assert ecal.energy_resolution(np.array([16000.0]), cfg)[0] == pytest.approx(
        ecal.energy_resolution(np.array([1000.0]), cfg)[0] / 4)


def test_leakage_tail_is_low_side(events):
    single = events.clusters["cluster_nPhotons"] == 1
    p = events.photons
    first_c = np.cumsum(events.n_clusters) - events.n_clusters
    k = p["photon_clusterIndex"] >= 0
    flat = first_c[_event_index(events.n_photons)[k]] + p["photon_clusterIndex"][k]
    ratio = events.clusters["cluster_E"][flat] / p["photon_E"][k]
    ratio = ratio[single[flat] & (p["photon_E"][k] > 20000)]
    low, high = np.mean(ratio < 0.95), np.mean(ratio > 1.05)
    assert low > 2 * high


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="merge_scal"):
        ecal.config_from({"ecal": {"merge_scal": 2}})
    assert ecal.config_from({"ecal": {"merge_scale": 2.0}}).merge_scale == 2.0


def test_schema_knows_every_ecal_option(repo_root):
    import dataclasses

    import yaml

    schema = yaml.safe_load((repo_root / "schemas" / "params.schema.yaml").read_text())
    sample = schema["properties"]["detsim"]["properties"]["samples"]["additionalProperties"]
    assert set(sample["properties"]["ecal"]["properties"]) == {f.name for f in dataclasses.fields(ecal.EcalConfig)}
