"""ECAL set-to-set models: data/matching, equivariance and batching of both nets, train -> export -> validate,
onnxruntime vs torch on events of several sizes, and the comparison page."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import scratch_repo

from flashsim import cli
from flashsim.detsim import ecal
from flashsim.errors import InputError
from flashsim.io import ecal as D
from flashsim.models import get_family, get_spec
from flashsim.models.ecal import core as C
from flashsim.models.ecal.gnn_net import EcalGNN
from flashsim.models.ecal.transformer_net import EcalTransformer


def _columns(n: int, seed: int) -> dict:
    return next(ecal.chunks(n, n, lambda i: np.random.default_rng(seed), {}))


@pytest.fixture(scope="module")
def events() -> D.Events:
    return D.Events.from_columns(_columns(3000, 5))


def test_matching_recovers_the_truth(events):
    cols = _columns(3000, 5)
    _, cluster_slot = D.match(events)
    ci = ak.to_numpy(ak.flatten(cols["photon_clusterIndex"]))
    glob = np.where(ci >= 0, events.cluster_start[events.photon_event] + ci, -1)
    seed = np.full(len(events.clusters), -1)
    kept = np.flatnonzero(glob >= 0)
    first = np.unique(glob[kept], return_index=True)[1]  # photons are energy-ordered: the first is the seed
    seed[glob[kept][first]] = kept[first]
    assert (cluster_slot == seed).mean() > 0.99
    on, t = D.targets(events, D.match(events)[0])
    back = D.slots_to_clusters(events.photons[on > 0], t[on > 0])
    assert np.allclose(back, events.clusters[D.match(events)[0][on > 0]], rtol=1e-4, atol=1e-2)


def test_edges_stay_within_events(events):
    e = D.radius_edges(events)
    ev = events.photon_event
    assert (ev[e[0]] == ev[e[1]]).all() and (e[0] != e[1]).all()
    pairs = set(map(tuple, e.T.tolist()))
    assert all((b, a) in pairs for a, b in pairs)
    e_t = C.radius_edges_t(torch.as_tensor(events.photons), torch.as_tensor(events.n_photons))
    assert np.array_equal(e_t.numpy(), e)  # the torch twin (GPU preprocessing) gives the same edges
    sub = events.select(np.array([5, 2, 9]))
    assert np.array_equal(sub.n_photons, events.n_photons[[5, 2, 9]])


def test_bad_parquet_names_branch(tmp_path):
    cols = _columns(50, 1)
    x = ak.to_list(cols["photon_E"])
    first = next(i for i, v in enumerate(x) if v)
    x[first][0] = float("nan")
    cols["photon_E"] = ak.Array(x)
    path = tmp_path / "bad.parquet"
    ak.to_parquet(ak.zip({k: cols[k] for k in cols}, depth_limit=1), path)
    with pytest.raises(InputError, match="photon_E"):
        D.Events.from_parquet(path)


def _gnn_y(model, ev, noise):
    with torch.no_grad():
        return model(torch.as_tensor(ev.photons, dtype=torch.float32), torch.as_tensor(noise),
                     torch.as_tensor(D.radius_edges(ev))).numpy()


def _tr_y(model, ev, noise, extra_pad: int = 0):
    x, mask = C.pad_events(ev)
    if extra_pad:
        x = np.concatenate([x, np.zeros((len(x), extra_pad, 5), np.float32)], 1)
        mask = np.concatenate([mask, np.zeros((len(x), extra_pad), bool)], 1)
    nz = np.zeros((*mask.shape, noise.shape[1]), np.float32)
    nz[mask] = noise
    with torch.no_grad():
        return model(torch.as_tensor(x), torch.as_tensor(mask), torch.as_tensor(nz)).numpy()[mask]


@pytest.mark.parametrize("kind", ["gnn", "transformer"])
def test_permutation_equivariance_and_event_independence(events, kind):
    torch.manual_seed(0)
    model = (EcalGNN(16, 2, 3) if kind == "gnn" else EcalTransformer(16, 2, 1, 1, 3)).eval()
    run = _gnn_y if kind == "gnn" else _tr_y
    busy = np.flatnonzero(events.n_photons >= 8)[:20]
    ev = events.select(busy)
    noise = np.random.default_rng(1).standard_normal((len(ev.photons), 4)).astype(np.float32)
    y = run(model, ev, noise)
    # one event alone gives what it gives inside a batch (no leakage between events)
    k = 3
    one = ev.select(np.array([k]))
    rows = slice(ev.photon_start[k], ev.photon_start[k] + ev.n_photons[k])
    assert np.allclose(run(model, one, noise[rows]), y[rows], atol=1e-4, rtol=1e-4)
    # permuting the photons of an event permutes the slots
    perm = np.random.default_rng(2).permutation(one.n_photons[0])
    shuffled = D.Events(one.n_photons, one.photons[perm], [0], np.empty((0, 3)))
    assert np.allclose(run(model, shuffled, noise[rows][perm]), y[rows][perm], atol=1e-4, rtol=1e-4)
    if kind == "transformer":  # more padding changes nothing
        assert np.allclose(_tr_y(model, ev, noise, extra_pad=5), y, atol=1e-4, rtol=1e-4)
    assert ((y[:, 0] == 0) | (y[:, 0] == 1)).all() and (y[:, 3] > 0).all()


MODELS = {
    "ecal_gnn": {"family": "ecal_gnn", "sample": "ecal", "epochs": 3, "width": 16, "layers": 2, "noise_dim": 3,
                 "batch_photons": 256, "threads": 1, "parity_events": [1, 5, 60]},
    "ecal_transformer": {"family": "ecal_transformer", "sample": "ecal", "epochs": 3, "width": 16, "heads": 2,
                         "enc_layers": 1, "dec_layers": 1, "noise_dim": 3, "batch_photons": 256, "threads": 1,
                         "parity_events": [1, 5, 60]},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = scratch_repo(tmp_path_factory.mktemp("ecal"), MODELS)
    out = root / "results" / "prepared" / "ecal"
    out.mkdir(parents=True)
    cols = _columns(3000, 11)
    for split, sl in (("train", slice(0, 1800)), ("val", slice(1800, 2400)), ("test", slice(2400, 3000))):
        ak.to_parquet(ak.zip({k: v[sl] for k, v in cols.items()}, depth_limit=1), out / f"{split}.parquet")
    return root


@pytest.mark.parametrize("name", list(MODELS))
def test_train_export_validate(repo, monkeypatch, name):
    monkeypatch.chdir(repo)
    for verb in ("train", "export", "validate"):
        assert cli.main([verb, name]) == 0, verb
    card = json.loads((repo / "models" / f"{name}.json").read_text())
    assert card["parity"]["n_failing"] == 0 and card["parity"]["on_flag_mismatches"] == 0
    assert [g["events"] for g in card["parity"]["groups"]] == [1, 5, 60]
    assert [c["name"] for c in card["inputs"][0]["columns"]] == list(D.PHOTON_FEATURES)
    m = json.loads((repo / "reports" / name / "metrics.json").read_text())["metrics"]
    for key in ("two_sample_auc", "multiplicity.mean_model", "residual.E_ratio", "unmatched.photon_rate_model",
                "energy_scale.max_abs_diff"):
        assert np.isfinite(m[key]), key
    # onnxruntime alone reproduces torch on event groups of different sizes
    fam = get_family(get_spec(name))
    fam.load()
    sess = fam.onnx_fn(ort.InferenceSession(str(repo / "models" / f"{name}.onnx")))
    test = fam.frame("test")
    for idx in (np.array([0]), np.arange(3, 10), np.arange(100, 400)):
        ev = test.select(idx)
        noise = fam.noise_for(ev, 5)
        a, b = fam.run(fam.torch_fn(), ev, noise), fam.run(sess, ev, noise)
        assert np.allclose(a[:, 1:], b[:, 1:], rtol=1e-3, atol=1e-2)
    # even 3 epochs learn the threshold: soft photons are less often clusters than hard ones
    ev = test.select(np.arange(len(test)))
    p_on = fam.run(sess, ev, fam.noise_for(ev, 1))[:, 4]
    e = ev.photons[:, 4]
    assert p_on[e < 400].mean() < 0.5 * p_on[e > 5000].mean()


def test_comparison_page(repo, monkeypatch):
    monkeypatch.chdir(repo)
    for name in MODELS:
        if not (repo / "reports" / name / "ecal_summary.npz").exists():
            pytest.skip("needs the validated models of test_train_export_validate")
    assert cli.main(["ecal-report"]) == 0
    page = (repo / "reports" / "ecal" / "index.html").read_text()
    assert "ecal_gnn" in page and "ecal_transformer" in page and "two-sample AUC" in page
    assert (repo / "reports" / "ecal" / "residuals.png").exists()
    assert "ecal/index.html" in (repo / "reports" / "index.html").read_text()
