"""sWeights in training: a generator trained on sWeighted signal + background reproduces the pure signal, while
the same training with the weights ignored does not; plus the shared pieces this relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import scratch_repo, write_prepared_calib

from flashsim import validation as V
from flashsim.mlops.runs import Run
from flashsim.models import get_family, get_spec
from flashsim.preprocessing import QuantileTransform
from flashsim.training import signal_probability_weights

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["probe_Brunel_RichDLLk"]  # the K-pi discriminant: where the pion background differs most


def _rich_entry(**over) -> dict:
    entry = dict(yaml.safe_load((ROOT / "params.yaml").read_text())["models"]["pid_rich"])
    entry.update({"species": ["K"], "targets": TARGETS, "differences": {}, "cuts": [], "epochs": 8, "steps": 0,
                  **over})  # the flow itself (few-step distillation is not what this file tests)
    entry.pop("gates", None)
    return entry


def _signal_auc(root: Path, name: str) -> float:
    """Two-sample AUC of the trained model against the PURE signal (truth) of the test split, unweighted, at the
    signal rows' own conditions."""
    fam = get_family(get_spec(name))
    fam.fit(Run(name, "train", fam.spec.train_dir))  # the local record only, as with FLASHSIM_MLFLOW=off
    df = fam.frame("test")
    sig = df[df["is_signal"] == 1]
    x = fam.features(sig)
    noise = np.random.default_rng(11).standard_normal((len(x), fam.noise_dim)).astype(np.float32)
    return V.two_sample_auc(fam.targets(sig), fam.predict(x, noise), conditions=x, seed=2)


def test_sweighted_training_reproduces_pure_signal(tmp_path, monkeypatch):
    """Kaon probes of D*+ -> D0(K- pi+) pi+ under ~45% combinatorial background (mostly pions, softer, whose RICH
    DLLs differ completely). The gate is the RICH models' demo gate on the two-sample AUC. The margin: repeated
    oracle comparisons of two pure-signal samples of this size scatter by ~0.005 in AUC, while ignoring the
    weights leaves the background in the learned distribution wherever the two overlap in kinematics (measured:
    0.57 with the sWeights, 0.69 without, 0.60 with the raw sWeights in the loss); asking for at least 0.08
    (16 standard deviations) cannot pass by chance, nor fail by a fluctuation."""
    gate = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]["pid_rich"]["gates"]["demo"][
        "two_sample_auc"]["max"]
    scratch_repo(tmp_path, {"sw": _rich_entry(), "noweight": _rich_entry(weight=None)})
    write_prepared_calib(tmp_path, "calib_K", "dstar_d0pi_K", 60000, seed=5)
    monkeypatch.chdir(tmp_path)
    weighted = _signal_auc(tmp_path, "sw_K")
    ignored = _signal_auc(tmp_path, "noweight_K")
    assert weighted <= gate, (weighted, ignored)
    assert ignored > gate, (weighted, ignored)
    assert ignored - weighted >= 0.08, (weighted, ignored)


def test_signal_probability_weights_recover_the_signal_fraction():
    """E[sWeight | x] is P(signal | x): non-negative, bounded, unbiased on average, and it tracks the truth."""
    from flashsim.detsim import calib
    from flashsim.detsim import samples as registry

    parts = list(calib.chunks(40000, 40000, registry.rng_factory(9, "spw"), {"channel": "lambda_ppi"}))
    d = parts[0]
    x = np.stack([d["probe_Brunel_P"], d["probe_Brunel_ETA"], d["probe_Brunel_RichDLLp"],
                  d["probe_Brunel_RichDLLk"]], 1)
    sw, truth = d["probe_sWeight"], d["is_signal"]
    w = signal_probability_weights(x, sw, seed=1)
    assert (w >= 0).all() and (w <= 1).all() and (sw < 0).any()
    assert w.sum() == pytest.approx(sw.sum(), rel=0.03)
    assert w[truth == 1].mean() > 0.75 and w[truth == 0].mean() < 0.3
    assert np.corrcoef(w, truth)[0, 1] > np.corrcoef(sw, truth)[0, 1]


def test_atoms_are_generated_exactly_in_torch_and_onnx(tmp_path):
    """A point mass inside a continuous column (RichDLLk == 0 below every threshold) comes back exactly."""
    from flashsim.export import export_torch, onnx_predict

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 20, 9000), np.zeros(800), np.full(200, -14.0)].astype(np.float32)
    w = rng.uniform(-0.3, 1.3, x.size)
    q = QuantileTransform.fit(x[:, None], w, 64, atoms=0.01)
    z = rng.standard_normal((50000, 1)).astype(np.float32)
    expect = np.sum(w * (x == 0)) / w.sum()
    inv = q.inverse()
    out = inv(torch.from_numpy(z)).numpy()[:, 0]
    assert (out == 0).mean() == pytest.approx(expect, abs=0.006)
    assert (out == -14).mean() == pytest.approx(np.sum(w * (x == -14)) / w.sum(), abs=0.004)
    onnx_out = onnx_predict(export_torch(inv, tmp_path / "inv.onnx", 1), z)[:, 0]
    np.testing.assert_array_equal(onnx_out == 0, out == 0)
    # training targets: atoms spread uniformly over their interval (gaussian in target space), round trip exact
    t = q.transform(x[:, None], rng=rng)
    assert abs(np.average(t[:, 0], weights=w)) < 0.05
    np.testing.assert_array_equal(q.inverse_transform(t)[:, 0][x == 0], 0.0)
    assert np.abs(q.inverse_transform(q.transform(x[:, None]))[:, 0] - x).max() < 1e-3
    assert not QuantileTransform.fit(x[:, None], w, 64).inverse().snapping  # off by default


def test_binned_efficiency_with_negative_weights():
    from flashsim.validation.metrics import binned_efficiency

    rng = np.random.default_rng(2)
    p = rng.uniform(0, 10, 40000)
    is_sig = rng.random(p.size) < 0.5
    passed = np.where(is_sig, rng.random(p.size) < 0.2 + 0.06 * p, rng.random(p.size) < 0.9)
    w = np.where(is_sig, 1.0, 0.0) + np.where(is_sig, 0.0, rng.choice([-1.0, 1.0], p.size))  # bkg cancels
    eff, err = binned_efficiency(passed, p, np.array([0.0, 2.5, 5.0, 7.5, 10.0]), w)
    truth = 0.2 + 0.06 * np.array([1.25, 3.75, 6.25, 8.75])
    assert np.all(np.abs(eff - truth) < 4 * err) and np.all(err < 0.03)


def test_parity_treats_matching_nan_as_agreement(tmp_path):
    import torch.nn as nn

    from flashsim.errors import GateError
    from flashsim.export import export_torch, parity_check

    class NanWhereNegative(nn.Module):
        def forward(self, x):
            return torch.where(x > 0, x * 2, torch.full_like(x, float("nan")))

    path = export_torch(NanWhereNegative(), tmp_path / "m.onnx", 2)
    x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    ok = parity_check(lambda a, n: np.where(a > 0, 2 * a, np.nan), path, x)
    assert ok["n_failing"] == 0
    with pytest.raises(GateError):
        parity_check(lambda a, n: 2 * a, path, x)  # NaN against a number is a deviation
