"""The generic drivers (train -> export -> validate) with every shared family, on a synthetic sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import scratch_repo, write_synthetic

from flashsim import cli
from flashsim.models import get_family, get_spec
from flashsim.training import Checkpointer, epoch_loop

COMMON = {"sample": "synth", "features": ["p", "eta", "x1"], "bins": {"p": "p", "eta": "eta", "n_p": 3, "n_eta": 2},
          "validation_rows": 3000, "threads": 1}
MODELS = {
    "clf_gbdt": {**COMMON, "family": "lgbm_classifier", "label": "label", "n_estimators": 40,
                 "oracle": "synth",
                 "gates": {"demo": {"calibration.chi2_ndf": {"max": 4.0}, "logloss_gap": {"max": 0.06}}}},
    "clf_mlp": {**COMMON, "family": "mlp_classifier", "label": "label", "epochs": 4, "width": 32, "depth": 2,
                "batch_size": 256, "oracle": "synth",
                "gates": {"demo": {"calibration.chi2_ndf": {"max": 4.0}, "logloss_gap": {"max": 0.06}}}},
    "gen_flow": {**COMMON, "family": "generator", "targets": ["y1", "y2"], "weight": "sw", "method": "flow",
                 "epochs": 12, "width": 64, "depth": 2, "batch_size": 256, "lr": 3e-3, "ode_steps": 6,
                 "gates": {"demo": {"two_sample_auc": {"max": 0.6}, "ks_max": {"max": 0.08}}}},
    "gen_gan": {**COMMON, "family": "generator", "targets": ["y1", "y2"], "method": "gan", "epochs": 2,
                "width": 32, "depth": 2, "batch_size": 256, "noise_dim": 4, "parity": {"atol": 1e-4, "rtol": 1e-4}},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    scratch_repo(root, MODELS)
    write_synthetic(root, "synth", n=10000, background=0.3)
    return root


def _run(repo, monkeypatch, *argv) -> int:
    monkeypatch.chdir(repo)
    return cli.main(list(argv))


@pytest.mark.parametrize("name", list(MODELS))
def test_train_export_validate(repo, monkeypatch, name):
    for verb in ("train", "export"):
        assert _run(repo, monkeypatch, verb, name) == 0
    card = json.loads((repo / "models" / f"{name}.json").read_text())
    assert card["inputs"][0]["columns"][0] == {"name": "p", "unit": "MeV/c"} or card["inputs"][0]["columns"][0][
        "name"] == "p"
    assert card["parity"]["n_failing"] == 0 and card["training_data"]["sha256"]
    rc = _run(repo, monkeypatch, "validate", name)
    out = json.loads((repo / "reports" / name / "metrics.json").read_text())
    assert rc == 0, out["gates"]
    assert (repo / "reports" / name / "index.html").exists()
    assert name in (repo / "reports" / "index.html").read_text()
    if name == "gen_gan":  # a 2-epoch GAN: the report is written, no gates configured
        assert out["gates"] == []


def test_onnx_only_reproduces_native(repo, monkeypatch):
    import onnxruntime as ort

    monkeypatch.chdir(repo)
    fam = get_family(get_spec("gen_flow"))
    fam.load()
    x = fam.features(fam.frame("test", 500))
    noise = np.random.default_rng(0).standard_normal((len(x), fam.noise_dim)).astype(np.float32)
    sess = ort.InferenceSession(str(repo / "models" / "gen_flow.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(["y"], {"x": x, "noise": noise})[0]
    tol = json.loads((repo / "models" / "gen_flow.json").read_text())["parity"]
    assert np.allclose(y, fam.predict(x, noise), atol=tol["atol"], rtol=tol["rtol"])


def test_gate_failure_names_metric(repo, monkeypatch, capsys):
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["clf_gbdt"]["gates"]["demo"]["auc"] = {"min": 0.999}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        assert _run(repo, monkeypatch, "validate", "clf_gbdt") == 3
        assert "auc" in capsys.readouterr().err
    finally:
        params["models"]["clf_gbdt"]["gates"]["demo"].pop("auc")
        (repo / "params.yaml").write_text(yaml.safe_dump(params))


def test_bad_hyperparameter_is_a_config_error(repo, monkeypatch, capsys):
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["typo"] = {**MODELS["clf_mlp"], "epoch": 3}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        assert _run(repo, monkeypatch, "train", "typo") == 2
        assert "epoch" in capsys.readouterr().err
        assert _run(repo, monkeypatch, "train", "nonexistent") == 2
    finally:
        params["models"].pop("typo")
        (repo / "params.yaml").write_text(yaml.safe_dump(params))


def test_checkpoint_resume_is_exact(tmp_path):
    """Interrupted after 2 epochs and resumed gives bit-identical weights to an uninterrupted run."""

    def make():
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1)
        opt = torch.optim.Adam(net.parameters(), lr=0.1)
        x = torch.randn(64, 3)

        def epoch_fn(epoch):
            loss = ((net(x + torch.randn_like(x) * 0.1) - 1) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return {"loss": float(loss.detach())}

        return net, opt, epoch_fn

    logged = []

    class MetricsLog:  # any object with the run's log_metrics (flashsim.training.MetricsLog)
        def log_metrics(self, m, step=None):
            logged.append((step, m["loss"]))

    net, opt, fn = make()
    ref_hist = epoch_loop(5, fn, get_state=lambda: {}, set_state=lambda s: None)
    ref = net.weight.detach().clone()

    net, opt, fn = make()
    ck = Checkpointer(tmp_path / "ck", every=1)

    def gs():
        return {"net": net.state_dict(), "opt": opt.state_dict()}

    def ss(s):
        net.load_state_dict(s["net"])
        opt.load_state_dict(s["opt"])

    ctx = MetricsLog()
    epoch_loop(5, fn, get_state=gs, set_state=ss, checkpointer=ck, ctx=ctx, stop_after=2)
    assert not torch.equal(net.weight, ref)
    net, opt, fn = make()  # a fresh process: new objects, state from the checkpoint
    hist = epoch_loop(5, fn, get_state=gs, set_state=ss, checkpointer=ck, ctx=ctx)
    assert torch.equal(net.weight, ref)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]
    assert [s for s, _ in logged] == [0, 1, 2, 3, 4]
    assert not list((tmp_path / "ck").glob("*.tmp"))
