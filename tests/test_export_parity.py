from __future__ import annotations

import numpy as np
import pytest

from flashsim.errors import GateError
from flashsim.export import (
    _round_down_f32,
    export_lightgbm,
    lightgbm_thresholds,
    onnx_predict,
    parity_check,
    threshold_rows,
)


@pytest.fixture(scope="module")
def gbdt():
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(20000, 4)) * [1.0, 1e3, 1e-3, 5.0]).astype(np.float32)
    y = (x[:, 0] + x[:, 1] / 1e3 * x[:, 2] * 1e3 + 0.3 * rng.normal(size=len(x)) > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=60, num_leaves=16, verbose=-1, random_state=0, n_jobs=1).fit(x, y)
    return model, x


def test_round_down():
    t = np.array([0.1, 1.0, -0.1, 1e-3])
    r = _round_down_f32(t)
    assert r.dtype == np.float32 and np.all(r.astype(np.float64) <= t)
    assert np.all(np.nextafter(r, np.float32(np.inf)).astype(np.float64) > t)


def test_lightgbm_onnx_parity_on_threshold_rows(tmp_path, gbdt):
    model, x = gbdt
    path = export_lightgbm(model.booster_, tmp_path / "m.onnx", 4)
    rows = threshold_rows(model, x, n=3000)
    # the rows do sit on thresholds, and some thresholds are not float32-representable (the pitfall)
    th = lightgbm_thresholds(model.booster_)
    assert any(np.any(np.float32(t).astype(np.float64) != t) for ts in th.values() for t in ts)
    res = parity_check(lambda a, _: model.predict_proba(a), path, np.vstack([x[:2000], rows]), atol=1e-6,
                       rtol=1e-5)
    assert res["n_failing"] == 0 and res["max_abs_deviation"] < 1e-6
    assert onnx_predict(path, x[:5]).shape == (5, 2)


def test_naive_conversion_breaks_on_thresholds_and_parity_catches_it(tmp_path, gbdt):
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model, x = gbdt
    onx = onnxmltools.convert_lightgbm(model, initial_types=[("x", FloatTensorType([None, 4]))], zipmap=False)
    import onnxruntime as ort

    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = threshold_rows(model, x, n=3000)
    naive = sess.run(["probabilities"], {"x": rows})[0]
    assert np.abs(naive - model.predict_proba(rows)).max() > 1e-3  # what the threshold fix is for
    path = export_lightgbm(model.booster_, tmp_path / "m.onnx", 4)
    with pytest.raises(GateError, match="max_abs_deviation"):
        parity_check(lambda a, _: model.predict_proba(a) * 0.99, path, rows, atol=1e-4, rtol=1e-4, name="m")
