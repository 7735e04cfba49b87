from __future__ import annotations

import numpy as np
import pytest
import torch

from flashsim.export import export_torch, onnx_predict
from flashsim.preprocessing import QuantileTransform, weighted_cdf


def _data(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.stack([rng.exponential(5e3, n), rng.integers(0, 12, n), rng.normal(0, 1, n), np.ones(n)], 1)
    return x.astype(np.float32), rng


def test_weighted_cdf_is_monotone_with_negative_weights():
    rng = np.random.default_rng(3)
    v = rng.normal(size=500)
    w = rng.normal(0.5, 2.0, size=500)  # many negative weights
    xs, u = weighted_cdf(v, w)
    assert np.all(np.diff(xs) > 0)
    assert np.all(np.diff(u) >= 0) and u.min() >= 0 and u.max() <= 1


@pytest.mark.parametrize("target", ["gaussian", "uniform"])
def test_round_trip_torch_numpy_and_onnx(tmp_path, target):
    x, rng = _data()
    w = rng.normal(1.0, 1.5, len(x))  # sWeight-like, ~25% negative
    qt = QuantileTransform.fit(x, w, n_knots=128, target=target)
    t = qt(torch.from_numpy(x))
    back = qt.inverse()(t).numpy()
    span = x.max(0) - x.min(0) + 1e-12
    assert np.all(np.abs(back - x).max(0) / np.maximum(span, 1) < 1e-5)
    assert np.abs(back[:, 1] - x[:, 1]).max() < 1e-4  # discrete values come back (to float32 rounding)
    assert np.allclose(qt.transform(x), t.numpy(), atol=1e-4)
    # the same through onnxruntime, forward and inverse
    export_torch(qt, tmp_path / "f.onnx", x.shape[1])
    export_torch(qt.inverse(), tmp_path / "i.onnx", x.shape[1])
    t_onnx = onnx_predict(tmp_path / "f.onnx", x)
    assert np.allclose(t_onnx, t.numpy(), atol=1e-5)
    assert np.all(np.abs(onnx_predict(tmp_path / "i.onnx", t_onnx) - back) <= 1e-5 * np.maximum(span, 1))


def test_gaussian_target_and_clamping():
    x, _ = _data()
    qt = QuantileTransform.fit(x[:, :3])
    t = qt.transform(x[:, :3])
    assert np.allclose(t[:, 0].mean(), 0, atol=0.03) and np.allclose(t[:, 0].std(), 1, atol=0.03)
    far = np.array([[1e9, 100, 50.0], [-1e9, -100, -50.0]], dtype=np.float32)
    back = qt.inverse()(qt(torch.from_numpy(far))).numpy()
    assert np.allclose(back[0], x[:, :3].max(0)) and np.allclose(back[1], x[:, :3].min(0))


def test_weights_change_the_fit():
    rng = np.random.default_rng(5)
    sig = rng.normal(0, 1, 5000)
    bkg = rng.uniform(-5, 5, 4000)  # cancelled by +/-1 weighted pairs
    v = np.concatenate([sig, bkg])
    w = np.concatenate([np.ones(5000), np.tile([1.0, -1.0], 2000)])
    q_w = QuantileTransform.fit(v, w)
    q_u = QuantileTransform.fit(v)
    med_w = q_w.inverse_transform(np.zeros((1, 1)))[0, 0]
    q84_w = q_w.inverse_transform(np.ones((1, 1)))[0, 0]
    q84_u = q_u.inverse_transform(np.ones((1, 1)))[0, 0]
    assert abs(med_w) < 0.1 and abs(q84_w - 1.0) < 0.15  # the signal's quantiles
    assert q84_u > 1.3  # unweighted: broadened by the background


def test_tail_knots_keep_the_end_segments_to_the_samples_own_extremes():
    """Default grid: the outermost 1/(n_knots - 1) of the weight is read linearly up to the most extreme value (a
    Gaussian pushed through the inverse fills it uniformly); with tail knots the tails follow the sample's."""
    rng = np.random.default_rng(2)
    y = rng.standard_t(2, 100000)[:, None]  # heavy tails
    z = torch.from_numpy(rng.standard_normal((200000, 1)).astype(np.float32))
    true_q = np.quantile(np.abs(y), 0.999)
    q = {k: np.quantile(np.abs(QuantileTransform.fit(y, n_knots=64, tail_knots=k).inverse()(z).numpy()), 0.999)
         for k in (0, 16)}
    assert q[0] > 3 * true_q  # the end segment spread out to the extreme
    assert abs(q[16] / true_q - 1) < 0.15
    # the end knots map onto the sample's own extreme quantiles: the round trip and clamping still hold
    qt = QuantileTransform.fit(y, n_knots=64, tail_knots=16)
    assert np.allclose(qt.inverse()(qt(torch.from_numpy(y.astype(np.float32)))).numpy(), y, rtol=1e-4, atol=1e-4)
    assert qt.knots_t[0][0] < -4 and qt.knots_t[0][-1] > 4
