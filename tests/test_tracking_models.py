"""Tracking models: skip MLP, covariance PD assembly, demo gates vs broken and perfect models, ONNX-only
reproduction, compiled GBDT parity — on small samples of the reference detector simulation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import repo_models, scratch_repo, write_tracking_sample

from flashsim import cli
from flashsim import validation as V
from flashsim.detsim import tracking as detsim_tracking
from flashsim.models import get_family, get_spec
from flashsim.models.covariance import UPPER, CovarianceAssembly, assemble_matrix, to_core
from flashsim.models.nets import MLP, ResidualBlock
from flashsim.validation import default as validate_default

_SHORT = {"validation_rows": 2000, "bins": {"p": "mc_p", "eta": "mc_eta", "n_p": 2, "n_eta": 1}}
FAST = {  # the repository's entries, trained shorter, validated on fewer rows
    "acceptance": {"n_estimators": 40, **_SHORT},
    "efficiency": {"epochs": 2, "width": 32, **_SHORT},
    "resolution": {"epochs": 2, "width": 32, "distill_epochs": 2, **_SHORT},  # few-step (steps) as in params
    "covariance": {"epochs": 2, "width": 32, "distill_epochs": 2, **_SHORT},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("trk")
    scratch_repo(root, repo_models(list(FAST), **FAST))
    write_tracking_sample(root, n=25000)
    return root


@pytest.fixture
def in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)
    return repo


@pytest.fixture
def one_thread():
    """Small torch models: one thread (two spin-wait badly when the cores are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_skip_connection_mlp(one_thread):
    torch.manual_seed(0)
    block = ResidualBlock(8)
    torch.nn.init.zeros_(block.f[-1].weight)
    torch.nn.init.zeros_(block.f[-1].bias)
    x = torch.randn(5, 8)
    assert torch.equal(block(x), x)  # the identity path is really there
    net = MLP(3, 4, width=16, depth=6, skip=True)
    assert sum(isinstance(m, ResidualBlock) for m in net.modules()) == 3
    net(torch.randn(7, 3)).sum().backward()
    first = net.net[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    # it learns a 4-class problem
    x = torch.randn(2000, 3)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (net(x).argmax(1) == y).float().mean() > 0.95


def test_covariance_assembly_is_positive_definite(tmp_path):
    from flashsim.export import export_torch, onnx_predict

    rng = np.random.default_rng(0)
    core = np.concatenate([rng.normal(-10, 8, (20000, 5)), rng.normal(0, 4, (20000, 10))], axis=1)
    core[:100, 5:] = 50.0  # extreme correlations
    cov = CovarianceAssembly()(torch.tensor(core, dtype=torch.float32)).numpy()
    m = assemble_matrix(cov.astype(np.float64))
    np.linalg.cholesky(m)  # raises unless every matrix is positive definite
    d = np.sqrt(np.diagonal(m, axis1=1, axis2=2))
    corr = m / d[:, :, None] / d[:, None, :]
    assert np.all(np.linalg.eigvalsh(corr)[:, 0] > 0)
    # covariance -> core -> covariance round trip (moderate values)
    core_mod = np.concatenate([rng.normal(-5, 2, (500, 5)), rng.normal(0, 0.8, (500, 10))], axis=1)
    cov_mod = CovarianceAssembly()(torch.tensor(core_mod)).numpy()
    assert np.allclose(CovarianceAssembly()(torch.tensor(to_core(cov_mod))).numpy(), cov_mod, rtol=3e-5, atol=0)
    # the reference simulation's covariances are reproduced through the core parameterisation
    sample = next(detsim_tracking.chunks(3000, 3000, lambda i: np.random.default_rng(i), {}))
    ok = sample["type"] > 0
    ref = np.stack([sample[f"cov_ClosestToBeam_{i}_{j}"][ok] for i, j in UPPER], axis=1).astype(np.float64)
    back = CovarianceAssembly()(torch.tensor(to_core(ref))).numpy()
    assert np.allclose(back, ref, rtol=3e-5, atol=0)
    # and the ONNX graph assembles the same
    export_torch(CovarianceAssembly(), tmp_path / "a.onnx", 15)
    assert np.allclose(onnx_predict(tmp_path / "a.onnx", core_mod.astype(np.float32)), cov_mod, rtol=1e-4)


def _demo_gates(name: str) -> dict:
    return repo_models([name])[name]["gates"]["demo"]


def _full_validation(name: str):
    """The family with the repository's validation settings (bins, rows) for the gate tests."""
    fam = get_family(get_spec(name))
    fam.cfg["bins"] = {**fam.cfg["bins"], **repo_models([name])[name]["bins"]}
    return fam


@pytest.mark.parametrize("name", ["acceptance", "efficiency"])
def test_classifier_gates_pass_the_oracle_and_fail_a_constant(in_repo, tmp_path, name):
    fam = _full_validation(name)
    df = fam.frame("test")
    oracle = fam.oracle(df)
    assert oracle is not None, "the oracle (flashsim.detsim.truth) must be importable"
    gates = _demo_gates(name)
    m_good, _ = validate_default.classifier(fam, df, lambda x, n: oracle, tmp_path / "good")
    assert all(r["passed"] for r in V.evaluate_gates(m_good, gates)), m_good
    y = fam.labels(df)
    const = np.bincount(y, minlength=oracle.shape[1]) / len(y)
    m_bad, _ = validate_default.classifier(fam, df, lambda x, n: np.tile(const, (len(x), 1)), tmp_path / "bad")
    failed = {r["metric"] for r in V.evaluate_gates(m_bad, gates) if not r["passed"]}
    assert {"calibration.chi2_ndf", "logloss_gap"} <= failed
    assert {"auc", "log_loss_skill", "brier_skill"} <= failed  # the held-out gates alone catch it too


def _resampled(fam, df):
    """A perfect generator: the reference simulation's response drawn again for the same particles (rows whose
    redrawn track type matches), and a condition-blind one: the reference outputs shuffled across rows."""
    gen_cols = ["mc_x", "mc_y", "mc_z", "mc_px", "mc_py", "mc_pz", "mc_charge", "mcID", "nTracks"]
    gen = {c: df[c].to_numpy() for c in gen_cols}
    redraw = None
    for k in range(5):
        r = detsim_tracking.respond(gen, np.random.default_rng(100 + k))
        r = {**{c: gen[c] for c in gen_cols}, **r}
        import pandas as pd

        rdf = fam.derive(pd.DataFrame(r))
        take = (rdf["type"].to_numpy() == df["type"].to_numpy())
        if redraw is None:
            redraw, have = fam.targets(rdf).copy(), take.copy()
        else:
            fill = take & ~have
            redraw[fill] = fam.targets(rdf)[fill]
            have |= take
    return redraw, have


@pytest.mark.parametrize("name", ["resolution", "covariance"])
def test_generator_gates_pass_a_resampler_and_fail_a_condition_blind_model(in_repo, tmp_path, name):
    fam = _full_validation(name)
    df = fam.frame("test")
    perfect, have = _resampled(fam, df)
    df, perfect = df[have].reset_index(drop=True), perfect[have]
    gates = _demo_gates(name)
    def good(x, n):
        return perfect

    m_good, _ = validate_default.generator(fam, df, good, tmp_path / "good", teacher=good)
    assert all(r["passed"] for r in V.evaluate_gates(m_good, gates)), m_good
    blind = fam.targets(df)[np.random.default_rng(3).permutation(len(df))]
    # distilled from the perfect teacher: the few-step gate (params' few_step_auc_delta) catches it as well
    m_bad, _ = validate_default.generator(fam, df, lambda x, n: blind, tmp_path / "bad", teacher=good)
    failed = {r["metric"] for r in V.evaluate_gates(m_bad, gates) if not r["passed"]}
    assert "two_sample_auc" in failed and "binned.ks_max" in failed, m_bad
    assert "few_step_auc_delta" in failed and m_good["few_step_auc_delta"] == 0
    assert m_bad["ks_max"] < 0.03  # the marginals are right: only conditional metrics can catch it


@pytest.mark.parametrize("name", list(FAST))
def test_train_export_and_onnx_only_reproduction(in_repo, name):
    assert cli.main(["train", name]) == 0
    assert cli.main(["export", name]) == 0
    card = json.loads((in_repo / "models" / f"{name}.json").read_text())
    assert [c["name"] for c in card["inputs"][0]["columns"]] == get_family(get_spec(name)).feature_names
    assert card["parity"]["n_failing"] == 0
    # reference outputs from the native model, then onnxruntime in a process where torch/lightgbm cannot load
    fam = get_family(get_spec(name))
    fam.load()
    x = fam.features(fam.frame("test", 2000))
    noise = np.random.default_rng(5).standard_normal((len(x), fam.noise_dim)).astype(np.float32)
    native = fam.predict(x, noise if fam.noise_dim else None)
    np.savez(in_repo / f"{name}_io.npz", x=x, noise=noise, native=native)
    code = f"""
import sys
for mod in ("torch", "lightgbm", "sklearn"):
    sys.modules[mod] = None
import json, numpy as np, onnxruntime as ort
d = np.load("{name}_io.npz")
s = ort.InferenceSession("models/{name}.onnx", providers=["CPUExecutionProvider"])
feed = {{"x": d["x"]}}
if any(i.name == "noise" for i in s.get_inputs()):
    feed["noise"] = d["noise"]
y = s.run(["y"], feed)[0]
tol = json.load(open("models/{name}.json"))["parity"]
assert np.all(np.abs(y - d["native"]) <= tol["atol"] + tol["rtol"] * np.abs(d["native"])), "deviation"
print("ok", y.shape)
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=in_repo, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
    assert cli.main(["validate", name, "--no-gates"]) == 0
    out = json.loads((in_repo / "reports" / name / "metrics.json").read_text())
    assert out["metrics"]["rows"] > 100 and (in_repo / "reports" / "index.html").exists()


def test_few_step_resolution_exports_its_distilled_student_and_validates_against_the_teacher(in_repo, tmp_path):
    """params.yaml: resolution has ``steps: 2``. The exported graph runs 2 network calls (the 8-step teacher 16),
    matches the native student, and validation reports the teacher on the same rows."""
    import onnx

    from flashsim.bench.runtime import dense_shapes
    from flashsim.export import export_torch

    fam = get_family(get_spec("resolution"))
    assert fam.few_step and fam.cfg["steps"] == 2
    if not fam.spec.onnx_path.exists():
        assert cli.main(["train", "resolution"]) == 0 and cli.main(["export", "resolution"]) == 0
    fam.load()
    summary = fam.training_summary()
    assert summary["distill.val_loss"] < summary["distill_history"][0]["distill.val_loss"]  # it learned
    export_torch(fam.teacher_module, tmp_path / "teacher.onnx", len(fam.feature_names), fam.noise_dim)
    layers = [sum(dense_shapes(onnx.load(f)).values()) for f in (fam.spec.onnx_path, tmp_path / "teacher.onnx")]
    depth_layers = layers[0] // 2
    assert layers == [2 * depth_layers, 2 * fam.cfg["ode_steps"] * depth_layers]
    x = fam.features(fam.frame("test", 500))
    noise = np.random.default_rng(2).standard_normal((len(x), fam.noise_dim)).astype(np.float32)
    from flashsim.export import onnx_predict

    assert np.allclose(onnx_predict(fam.spec.onnx_path, x, noise), fam.predict(x, noise), rtol=1e-3, atol=1e-4)
    assert not np.allclose(fam.teacher_predict(x, noise), fam.predict(x, noise), rtol=1e-3, atol=1e-4)
    assert cli.main(["validate", "resolution", "--no-gates"]) == 0
    m = json.loads((in_repo / "reports" / "resolution" / "metrics.json").read_text())["metrics"]
    assert m["few_step_auc_delta"] == pytest.approx(m["two_sample_auc"] - m["teacher.two_sample_auc"])
    assert "teacher.two_sample_auc" in (in_repo / "reports" / "resolution" / "index.html").read_text()


def test_bench_variants_are_the_teacher_and_a_one_pass_gan_of_the_same_interface(in_repo, tmp_path):
    """``flashsim bench runtime``'s chain variants of a few-step model: the 8-step teacher (16 network calls) and
    an untrained one-pass GAN (1 call), with the deployed model's inputs and outputs."""
    import onnx

    from flashsim.bench.runtime import dense_shapes
    from flashsim.bench.variants import write_variant
    from flashsim.config import load_params
    from flashsim.export import onnx_predict

    fam = get_family(get_spec("resolution"))
    if not fam.spec.onnx_path.exists():
        assert cli.main(["train", "resolution"]) == 0 and cli.main(["export", "resolution"]) == 0
    x = fam.features(fam.frame("test", 300))
    noise = np.random.default_rng(4).standard_normal((len(x), fam.noise_dim)).astype(np.float32)
    calls = {}
    for variant, what in (("flow8", "teacher"), ("gan1", "gan (untrained)")):
        done = write_variant(variant, load_params(), in_repo / "models", ["resolution"], tmp_path / variant)
        assert done == {"resolution": what}
        graph = tmp_path / variant / "resolution.onnx"
        calls[variant] = sum(dense_shapes(onnx.load(graph)).values())
        y = onnx_predict(graph, x, noise)
        assert y.shape == (len(x), len(fam.output_names())) and np.isfinite(y).all()
    deployed = sum(dense_shapes(onnx.load(fam.spec.onnx_path)).values())
    assert calls["flow8"] == 8 * deployed and calls["gan1"] == deployed // 2


def test_few_step_needs_a_flow(in_repo, capsys):
    """``steps`` > 0 with ``method: gan`` is a config error (exit 2) before anything runs."""
    import yaml

    params = yaml.safe_load((in_repo / "params.yaml").read_text())
    params["models"]["resolution"] |= {"method": "gan", "steps": 1}
    bad = in_repo / "params_gan_steps.yaml"
    bad.write_text(yaml.safe_dump(params))
    assert cli.main(["train", "resolution", "--params", str(bad)]) == 2
    assert "models/resolution/steps" in capsys.readouterr().err


def test_compiled_gbdt_matches_lightgbm_and_onnx(in_repo):
    """The tl2cgen shared object of the acceptance GBDT (runtime's C-ABI route) vs LightGBM and ONNX."""
    from flashsim.export import onnx_predict, threshold_rows
    from flashsim.runtime import cabi

    fam = get_family(get_spec("acceptance"))
    if not (in_repo / "models" / "acceptance.onnx").exists():
        assert cli.main(["train", "acceptance"]) == 0 and cli.main(["export", "acceptance"]) == 0
    fam.load()
    art = cabi.build(in_repo / "models" / "acceptance.onnx", in_repo / "models" / "acceptance.so", route="tl2cgen")
    c_model = cabi.CModel(art.so, art.symbol)
    x = fam.features(fam.frame("test", 3000))
    rows = np.vstack([x, threshold_rows(fam.model, x, n=3000)]).astype(np.float32)
    p_lgbm = fam.predict(rows)
    p_c = c_model(rows)
    p_onnx = onnx_predict(in_repo / "models" / "acceptance.onnx", rows)
    assert art.route == "tl2cgen"
    assert np.abs(p_c - p_lgbm).max() < 1e-5
    assert np.abs(p_c - p_onnx).max() < 1e-6
