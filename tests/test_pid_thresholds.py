"""Cherenkov-threshold features of the PID generators (``threshold_features``): the exported graph computes them
from the physical momentum exactly as training does, they sit at the detector's thresholds, and a bad option is a
config error (exit 2) before any work."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import scratch_repo

from flashsim import cli
from flashsim.detector import RICH_RADIATORS, rich_radiators
from flashsim.errors import ConfigError
from flashsim.models.pid import generator as pg
from flashsim.preprocessing import QuantileTransform


def test_thresholds_are_the_detector_physics():
    thr = pg.threshold_momenta(RICH_RADIATORS, ["rich1", "rich2"])
    # mu, pi, K, p in RICH1 (C4F10) then RICH2 (CF4), GeV/c
    assert np.allclose(np.array(thr) / 1e3, [2.00, 2.64, 9.33, 17.73, 3.34, 4.41, 15.61, 29.67], atol=0.01)
    assert rich_radiators({"detector": {"rich": {"r": {"n_minus_1": 1e-3}}}}) == {"r": 1e-3}
    with pytest.raises(ConfigError, match=r"detector\.rich/r/n_minus_1"):
        rich_radiators({"detector": {"rich": {"r": {"n_minus_1": 0}}}})


def test_threshold_features_torch_onnx_and_training_agree(tmp_path):
    import onnxruntime as ort
    import torch

    from flashsim.export import export_torch

    rng = np.random.default_rng(1)
    thr = pg.threshold_momenta(RICH_RADIATORS, ["rich1", "rich2"])
    # momenta around every threshold (just below, at, just above) and over the whole range
    p = np.concatenate([np.outer(thr, [0.97, 1.0, 1.001, 1.03]).ravel(), np.exp(rng.uniform(7, 12.5, 500))])
    x = np.stack([rng.uniform(2, 5, len(p)), p, rng.uniform(10, 400, len(p))], axis=1).astype(np.float32)
    qx = QuantileTransform.fit(x.astype(np.float64), n_knots=32)
    module = pg.ThresholdFeatures(qx, 1, thr).eval()
    with torch.no_grad():
        out_t = module(torch.from_numpy(x)).numpy()
    path = export_torch(module, tmp_path / "thr.onnx", x.shape[1])
    out_o = ort.InferenceSession(str(path)).run(["y"], {"x": x})[0]
    feats = pg.threshold_features_np(x[:, 1], thr)
    assert out_t.shape == (len(x), 3 + 2 * len(thr))
    np.testing.assert_allclose(out_o, out_t, atol=2e-6)
    np.testing.assert_allclose(out_t[:, 3:], feats, atol=2e-6)  # what training feeds the core
    np.testing.assert_allclose(out_t[:, :3], qx.transform(x), atol=1e-4)
    yld, step = feats[:, :len(thr)], feats[:, len(thr):]
    below = x[:, 1:2] < np.array(thr)[None, :] * 0.999
    assert (yld[below] == 0).all() and (yld[~below] >= 0).all() and (yld < 1).all()
    assert (step[below] < 0).all() and (step[x[:, 1:2] > np.array(thr)[None, :] * 1.001] > 0).all()


@pytest.mark.parametrize("option, words", [(["rich3"], "unknown radiators ['rich3']"),
                                            ("rich1", "threshold_features")])
def test_bad_threshold_option_is_a_config_error(tmp_path, monkeypatch, capsys, option, words):
    entry = {"family": "pid_generator", "species": ["K"], "sample": "calib_{species}", "features": "pid_kinematics",
             "targets": ["probe_Brunel_RichDLLk"], "threshold_features": option}
    scratch_repo(tmp_path, {"pid_rich": entry})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "pid_rich_K"]) == 2
    err = capsys.readouterr().err
    assert words in err and "pid_rich_K" in err, err
    assert not (tmp_path / "results" / "train" / "pid_rich_K").exists()


def test_generator_with_threshold_features_trains_and_exports(tmp_path, monkeypatch):
    """A one-core (RICH) generator with the features: fit, reload, ONNX export within its parity gate."""
    import json

    from helpers import write_prepared_calib

    entry = {"family": "pid_generator", "species": ["K"], "sample": "calib_{species}", "features": "pid_kinematics",
             "targets": ["probe_Brunel_RichDLLk", "probe_Brunel_RichDLLp"], "threshold_features": ["rich1", "rich2"],
             "epochs": 1, "width": 16, "depth": 2, "validation_rows": 500}
    scratch_repo(tmp_path, {"pid_rich": entry})
    write_prepared_calib(tmp_path, "calib_K", "dstar_d0pi_K", 3000, seed=5)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "pid_rich_K"]) == 0
    assert cli.main(["export", "pid_rich_K"]) == 0
    card = json.loads((tmp_path / "models" / "pid_rich_K.json").read_text())
    assert card["parity"]["n_failing"] == 0 and card["parity"]["rows"] > 0  # torch (training formula) == ONNX
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "models" / "pid_rich_K.onnx")).graph.node}
    assert {"Log", "Tanh"} <= ops  # the features are computed in the graph
