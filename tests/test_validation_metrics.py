from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from flashsim import validation as V
from flashsim.errors import ConfigError, GateError


def test_weighted_auc_matches_sklearn_and_handles_negative_weights():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    s = rng.normal(y * 0.8, 1.0).round(1)  # ties on purpose
    w = rng.uniform(0.2, 2.0, 3000)
    assert V.weighted_auc(s, y, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-9)
    # +/-1 pairs of a third population cancel: the AUC equals the one without them
    extra_s = rng.normal(3.0, 1.0, 2000)
    s2 = np.r_[s, extra_s, extra_s]
    y2 = np.r_[y, np.ones(2000), np.ones(2000)]
    w2 = np.r_[w, np.ones(2000), -np.ones(2000)]
    assert V.weighted_auc(s2, y2, w2) == pytest.approx(V.weighted_auc(s, y, w), abs=1e-9)


def test_metrics_detect_a_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (6000, 2))
    same = rng.normal(0, 1, (6000, 2))
    shifted = same + [0.3, 0.0]
    assert V.weighted_ks(a[:, 0], same[:, 0]) < 0.04 < V.weighted_ks(a[:, 0], shifted[:, 0])
    assert V.weighted_wasserstein(a[:, 0], same[:, 0]) < 0.06 < V.weighted_wasserstein(a[:, 0], shifted[:, 0])
    assert abs(V.weighted_wasserstein(a[:, 0], shifted[:, 0]) - 0.3) < 0.06
    assert V.two_sample_auc(a, same, seed=0) < 0.54
    assert V.two_sample_auc(a, shifted, seed=0) > 0.56


def test_two_sample_auc_uses_conditions_and_weights():
    rng = np.random.default_rng(2)
    c = rng.normal(0, 1, (8000, 1))
    ref = c + 0.3 * rng.normal(size=(8000, 1))
    blind = rng.permutation(ref)  # right marginal, ignores the condition
    assert V.weighted_ks(ref[:, 0], blind[:, 0]) < 0.03  # marginals agree
    assert V.two_sample_auc(ref, blind, conditions=c, seed=0) > 0.8  # the conditional test sees it
    # sWeighted reference: background +/- pairs do not change the verdict
    bkg = rng.uniform(-4, 4, (4000, 1))
    ref_w = np.vstack([ref, bkg])
    w = np.r_[np.ones(8000), np.tile([1.0, -1.0], 2000)]
    gen = rng.normal(0, 1, (8000, 1)) * np.sqrt(1.09)
    auc = V.two_sample_auc(ref_w, np.vstack([gen, gen[:4000]]), w, np.r_[np.ones(8000), np.zeros(4000)], seed=0)
    assert auc < 0.56


def test_calibration_and_logloss_gap_fail_a_constant_classifier():
    rng = np.random.default_rng(3)
    p, eta = np.exp(rng.normal(10, 1, 20000)), rng.uniform(2, 5, 20000)
    truth = 1 / (1 + np.exp(-(np.log(p) - 10) + (eta - 3.5)))
    y = rng.uniform(size=len(p)) < truth
    bins = V.bin_index(p, eta, V.bin_edges(p, 4, log=True), V.bin_edges(eta, 3))
    good = V.calibration_chi2(truth, y, bins)
    const = V.calibration_chi2(np.full(len(p), y.mean()), y, bins)
    assert good["ndf"] == 12 and good["chi2_ndf"] < 3 and const["chi2_ndf"] > 20
    assert abs(V.log_loss_gap(truth, truth, y)) < 1e-12
    assert V.log_loss_gap(np.full(len(p), y.mean()), truth, y) > 0.05
    # multi-class form
    probs = np.stack([1 - truth, truth], 1)
    assert V.calibration_chi2(probs, y, bins)["chi2_ndf"] == pytest.approx(good["chi2_ndf"])


def test_gates(tmp_path):
    rows = V.evaluate_gates({"auc": 0.7, "ks_max": 0.01}, {"auc": {"max": 0.6}, "ks_max": {"max": 0.05},
                                                            "missing": {"min": 1}})
    assert [r["passed"] for r in rows] == [False, True, False]
    with pytest.raises(GateError, match=r"auc = 0\.7 .*missing = missing"):
        V.enforce("m", rows)
    with pytest.raises(ConfigError, match="auc"):
        V.evaluate_gates({"auc": 0.1}, {"auc": {"below": 1}})
    V.enforce("m", rows[1:2])


def test_report_pages(tmp_path):
    rng = np.random.default_rng(4)
    ref, gen = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    d = tmp_path / "reports" / "m1"
    png = V.plot_distributions(ref, gen, ["a", "b"], d / "dist.png", ["mm", "1"])
    rows = V.evaluate_gates({"ks_max": 0.02}, {"ks_max": {"max": 0.05}})
    (d / "metrics.json").write_text(json.dumps({"family": "f", "gates": rows}))
    V.write_model_page(d, "m1", {"ks_max": 0.02}, rows, [png])
    (tmp_path / "reports" / "m2").mkdir()
    (tmp_path / "reports" / "m2" / "metrics.json").write_text(json.dumps({"gates": [{**rows[0], "passed": False}]}))
    index = V.write_index(tmp_path / "reports").read_text()
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "m1/index.html" in index and "m2/index.html" in index and "FAIL" in index and "PASS" in index
    assert "dist.png" in (d / "index.html").read_text()
