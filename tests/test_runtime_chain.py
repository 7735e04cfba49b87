"""The flash-simulation chain on toy models: sampling, residuals, reproducibility, IO modes, CLI and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import uproot

from flashsim.cli import main
from flashsim.runtime import features as F
from flashsim.runtime import io, toys
from flashsim.runtime.chain import Chain
from flashsim.runtime.models import available, resolve
from flashsim.runtime.session import Device
from flashsim.runtime.simulate import Settings, build_chain, run_chain

ROOT = Path(__file__).resolve().parents[1]

CPU = Device("cpu")


@pytest.fixture(scope="module")
def models(runtime_toy_models, tmp_path_factory):
    """A private copy of the session's toy models (tests add .so files next to them)."""
    import shutil

    out = tmp_path_factory.mktemp("models")
    shutil.copytree(runtime_toy_models, out, dirs_exist_ok=True)
    return out


def _simulate(models, n=20_000, seed=5, **kw):
    settings = Settings(models=str(models), device="cpu", threads=1, batch_size=kw.pop("batch_size", 8000), **kw)
    chain = build_chain(settings)
    chunks = io.particle_gun(io.gun_config({"n": n}), 3, chunk=n)
    parts = list(run_chain(chain, chunks, seed=seed, batch_size=settings.batch_size))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_chain_samples_the_models_probabilities(models):
    out = _simulate(models)
    n = len(out["mcID"])
    refs = available(["acceptance", "efficiency"], models)
    gen = F.Batch({k: torch.from_numpy(v) for k, v in out.items() if k in io.GENERATOR})
    sess = {k: ort.InferenceSession(str(r.onnx), providers=["CPUExecutionProvider"]) for k, r in refs.items()}
    p_acc = sess["acceptance"].run(["y"], {"x": gen.matrix(refs["acceptance"].features).numpy()})[0][:, 1]
    # accepted fraction equals the mean acceptance probability within binomial errors
    assert abs(out["acceptance"].mean() - p_acc.mean()) < 4 * np.sqrt(p_acc.mean() * (1 - p_acc.mean()) / n)
    # acceptance follows the probability: high-probability particles are accepted more often
    hi = p_acc > np.median(p_acc)
    assert out["acceptance"][hi].mean() > out["acceptance"][~hi].mean()
    acc = out["acceptance"] == 1
    p_type = sess["efficiency"].run(["y"], {"x": gen.matrix(refs["efficiency"].features).numpy()[acc]})[0]
    for cls, code in enumerate(F.TYPE_CODES):
        frac = np.mean(out["type"][acc] == code)
        assert abs(frac - p_type[:, cls].mean()) < 4 * np.sqrt(0.25 / acc.sum()) + 1e-3, (code, frac)
    assert np.all(out["type"][~acc] == 0)


def test_residuals_become_reconstructed_quantities(models):
    out = _simulate(models, n=5000)
    reco = out["type"] > 0
    assert np.all(np.isnan(out["x_ClosestToBeam"][~reco])) and np.all(np.isfinite(out["x_ClosestToBeam"][reco]))
    b = F.Batch({k: torch.from_numpy(v) for k, v in out.items() if k in io.GENERATOR})
    true_x = b["true_x_ClosestToBeam"].numpy()[reco]
    dx = out["x_ClosestToBeam"][reco] - true_x
    assert 0 < np.std(dx) < 1.0  # a residual of the toy's size (mm), not a copy of the truth or noise-free
    p_true = b["p"].numpy()[reco]
    assert np.median(np.abs(out["p"][reco] / p_true - 1)) < 0.05
    # PID only for the species with a pipeline and reconstructed tracks; isMuon is a sampled 0/1 flag
    assert set(np.unique(out["isMuon"])) <= {0, 1}
    has_pid = np.isfinite(out["RichDLLk"])
    assert np.all(reco[has_pid]) and not np.any(has_pid[np.abs(out["mcID"]) == 11])
    # species-dependent response: kaons have a higher DLLK than pions (the toy's shifts)
    k, pi = has_pid & (np.abs(out["mcID"]) == 321), has_pid & (np.abs(out["mcID"]) == 211)
    assert np.mean(out["RichDLLk"][k]) > np.mean(out["RichDLLk"][pi]) + 5


def test_reproducible_and_seed_dependent(models):
    a, b, c = _simulate(models, n=6000), _simulate(models, n=6000), _simulate(models, n=6000, seed=6)
    for k in ("acceptance", "type", "x_ClosestToBeam", "RichDLLk"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["type"], c["type"])


def test_host_io_and_c_trees_give_the_same_particles(models, tmp_path):
    from flashsim.runtime.export_c import build_checked

    base = _simulate(models, n=6000)
    host = _simulate(models, n=6000, io="host")
    np.testing.assert_array_equal(base["type"], host["type"])
    np.testing.assert_allclose(base["p"], host["p"], rtol=1e-6)
    build_checked("acceptance", models, rows=2000)
    assert (models / "acceptance.so").exists() and (models / "acceptance.so.json").exists()
    ctree = _simulate(models, n=6000, tree_backend="c")
    assert np.mean(base["acceptance"] == ctree["acceptance"]) > 0.999
    auto = _simulate(models, n=6000)  # "auto" now finds the tl2cgen object and uses it
    np.testing.assert_array_equal(auto["acceptance"], ctree["acceptance"])
    np.testing.assert_array_equal(_simulate(models, n=6000, tree_backend="onnx")["acceptance"], base["acceptance"])
    tensor = _simulate(models, n=6000, tree_backend="tensor")  # the GEMM form a GPU runs
    assert np.mean(tensor["acceptance"] == base["acceptance"]) > 0.999
    np.testing.assert_array_equal(tensor["type"], base["type"])


def test_missing_stages_are_skipped(models):
    refs = {k: resolve(k, models) for k in ("acceptance", "resolution")}
    chain = Chain(refs, CPU, threads=1)
    assert chain.stages == ["acceptance", "resolution"]
    batch = toys.gun_batch(2000, 1)
    chain.run(batch, torch.Generator().manual_seed(1))
    t = batch["type"].numpy()
    assert set(np.unique(t)) <= {0, 3}  # accepted particles default to long tracks
    assert np.all(np.isfinite(batch["x_ClosestToBeam"].numpy()[t == 3]))


def test_cli_writes_ntuple_and_rejects_bad_input(models, tmp_path, capsys):
    gun = tmp_path / "gun.yaml"
    gun.write_text("n: 3000\nspecies: {K: 1, pi: 2}\np: {min: 3000, max: 50000, dist: log}\n")
    out = tmp_path / "flash.root"
    assert main(["simulate", "--gun", str(gun), "--models", str(models), "--output", str(out), "--device", "cpu",
                 "--batch-size", "1000"]) == 0
    with uproot.open(out) as f:
        t = f["FlashSim"]
        assert t.num_entries == 3000
        cols = t.arrays(["mcID", "type", "p", "PIDK"], library="np")
    assert set(np.unique(np.abs(cols["mcID"]))) == {211, 321}
    assert np.all(np.isfinite(cols["p"][cols["type"] > 0]))
    # the output is an input too (its generator-level columns), even with a renamed tree and a subset
    again = tmp_path / "again.root"
    assert main(["simulate", "--input", str(out), "--models", str(models), "--output", str(again),
                 "--max-particles", "500"]) == 0
    assert uproot.open(again)["FlashSim"].num_entries == 500
    # bad input: one line naming file / branch, non-zero exit, no output left behind
    with uproot.recreate(tmp_path / "bad.root") as f:
        f.mktree("T", {"mc_px": np.float32, "mc_py": np.float32, "mcID": np.int32})
        f["T"].extend({"mc_px": np.ones(3, np.float32), "mc_py": np.ones(3, np.float32), "mcID": np.ones(3, np.int32)})
    bad_out = tmp_path / "bad_out.root"
    capsys.readouterr()
    assert main(["simulate", "--input", str(tmp_path / "bad.root"), "--models", str(models),
                 "--output", str(bad_out)]) != 0
    err = capsys.readouterr().err
    assert "mc_pz" in err and "bad.root" in err and len(err.strip().splitlines()) == 1
    assert not bad_out.exists() and not list(tmp_path.glob(".bad_out.root*"))
    bad_gun = tmp_path / "bad_gun.yaml"
    bad_gun.write_text("n: 10\nspecies: [kaon]\n")
    assert main(["simulate", "--gun", str(bad_gun), "--models", str(models), "--output", str(bad_out)]) != 0
    assert "species" in capsys.readouterr().err


def test_models_from_the_mlflow_registry_by_alias(runtime_toy_models, tmp_path, monkeypatch):
    """`--models 'models:/{name}@validated'`: registered versions are downloaded and chained; others skipped."""
    import shutil

    from flashsim.mlops import model_registry, runs

    root = tmp_path / "proj"
    shutil.copytree(ROOT / "schemas", root / "schemas")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    monkeypatch.chdir(root)
    monkeypatch.setenv("FLASHSIM_MLFLOW", "on")
    for name in ("acceptance", "resolution"):
        onnx_path, card = runtime_toy_models / f"{name}.onnx", runtime_toy_models / f"{name}.json"
        with runs.start_job("export", name, root=root) as t:
            model_registry.register_export(t, name, onnx_path, card)
        with runs.start_job("validate", name, root=root) as t:
            model_registry.record_validation(t, name, onnx_path, {"auc": 0.5}, name == "acceptance")
    ref = resolve("acceptance", "models:/{name}@validated", cache=tmp_path / "cache")
    assert ref.features == toys.ACC_FEATURES and ref.origin == "models:/acceptance@validated"
    assert ref.version == "1"  # the registry version behind the alias (recorded in simulate's provenance)
    assert ref.onnx.read_bytes() == (runtime_toy_models / "acceptance.onnx").read_bytes()
    # resolution failed its gates (no 'validated' alias) and efficiency was never registered: both skipped
    refs = available(["acceptance", "efficiency", "resolution"], "models:/{name}@validated")
    assert set(refs) == {"acceptance"}
    assert set(available(["resolution"], "models:/{name}@candidate")) == {"resolution"}


@pytest.mark.gpu
def test_cuda_chain_binds_device_tensors(models):
    """On a GPU: the chain runs with the CUDA provider, IO binding and host IO give the same particles, and the
    accepted / reconstructed fractions agree with the CPU chain's within statistics."""
    from flashsim.runtime.session import cuda_available

    if not cuda_available():
        pytest.skip("needs torch CUDA and onnxruntime-gpu")
    gpu = _simulate_on(models, "cuda")
    host = _simulate_on(models, "cuda", io="host")
    cpu = _simulate_on(models, "cpu")
    np.testing.assert_array_equal(gpu["type"], host["type"])
    for k in ("acceptance", "type"):
        for v in np.unique(cpu[k]):
            assert abs(np.mean(gpu[k] == v) - np.mean(cpu[k] == v)) < 0.02, (k, v)


def _simulate_on(models, device, n=40_000, **kw):
    settings = Settings(models=str(models), device=device, threads=0, batch_size=20_000, **kw)
    chain = build_chain(settings)
    assert str(chain.device).startswith(device)
    if device == "cuda":
        assert all("CUDAExecutionProvider" in m.session.get_providers() for m in chain.models.values())
    parts = list(run_chain(chain, io.particle_gun(io.gun_config({"n": n}), 3, chunk=n), seed=5, batch_size=20_000))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
