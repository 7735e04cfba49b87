"""Benchmark targets of the ECAL models and the ghost MLP run (quick mode, untrained configured models)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import scratch_repo

from flashsim.bench import ecal as bench_ecal
from flashsim.bench import ghost_mlp as bench_ghost
from flashsim.config import load_params

MODELS = {
    "ghost_mlp": {"family": "ghost_mlp", "sample": "ghost"},
    "ecal_gnn": {"family": "ecal_gnn", "sample": "ecal", "width": 16, "layers": 2},
    "ecal_transformer": {"family": "ecal_transformer", "sample": "ecal", "width": 16, "heads": 2},
}


@pytest.fixture
def params(tmp_path, monkeypatch):
    scratch_repo(tmp_path, MODELS)
    monkeypatch.chdir(tmp_path)
    return load_params(tmp_path / "params.yaml")


def test_events_with_exact_multiplicity():
    ev = bench_ecal.events_with(7, 50)
    assert len(ev) == 50 and (ev.n_photons == 7).all() and len(ev.photons) == 350
    assert np.isfinite(ev.photons).all() and (ev.photons[:, 4] > 0).all()


def test_ghost_and_ecal_targets(params):
    g = bench_ghost.run(quick=True, params=params)
    assert g["trained"] is False and g["flops_per_particle"] == 2 * (17 * 25 + 25 * 20 + 20)
    cpu = [r for r in g["results"] if r["device"] == "cpu"]
    assert {(r["engine"], r.get("dtype", "fp32")) for r in cpu} >= {("onnxruntime", "fp32"), ("torch", "bfloat16")}
    assert all(r["particles_per_s"] > 0 for r in g["results"])
    e = bench_ecal.run(quick=True, params=params)
    rows = {(r["model"], r["photons_per_event"]) for r in e["results"] if r["device"] == "cpu"}
    assert rows == {(m, k) for m in ("ecal_gnn", "ecal_transformer") for k in (5, 20)}
    assert all(r["events_per_s"] > 0 and r["events_per_s_model_only"] > 0 for r in e["results"])


@pytest.mark.parametrize("name", ["ecal_gnn", "ecal_transformer"])
def test_device_feeds_match_the_family_runner(params, tmp_path, name):
    """The torch preprocessing of the GPU benchmark gives the inputs the family's own runner builds."""
    import onnxruntime as ort
    import torch

    fam, path, trained = bench_ecal._family(name, params, tmp_path)
    assert not trained
    ev = bench_ecal.events_with(6, 40)
    feeds, y = bench_ecal.device_feeds(name, torch.as_tensor(ev.photons, dtype=torch.float32),
                                       torch.as_tensor(ev.n_photons), fam.noise_dim, torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(str(path))
    out = sess.run(["y"], {k: v.numpy() for k, v in feeds.items()})[0]
    assert out.shape == tuple(y.shape)
    noise = feeds["noise"].numpy()
    if name == "ecal_transformer":
        noise = noise[feeds["mask"].numpy()]
        out = out[feeds["mask"].numpy()]
    ref = fam.run(fam.onnx_fn(sess), ev, noise)
    assert np.allclose(out, ref, atol=1e-4, rtol=1e-4)
