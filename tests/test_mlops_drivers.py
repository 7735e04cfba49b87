"""`flashsim train/export/validate` are recorded in MLflow, and a registered version's provenance is enough to
rebuild its ONNX file bit for bit (code from the recorded commit + patch, params, data checked by hash)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import scratch_repo, write_synthetic

from flashsim.cli import main as flashsim
from flashsim.mlops import model_registry, provenance, runs

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"sample": "synth", "features": ["p", "eta", "x1"], "bins": {"p": "p", "eta": "eta", "n_p": 3, "n_eta": 2},
          "validation_rows": 2000, "threads": 1, "label": "label", "oracle": "synth",
          "gates": {"demo": {"calibration.chi2_ndf": {"max": 6.0}, "logloss_gap": {"max": 0.08}}}}
MODELS = {
    "clf_gbdt": {**COMMON, "family": "lgbm_classifier", "n_estimators": 30},
    "clf_mlp": {**COMMON, "family": "mlp_classifier", "epochs": 3, "width": 16, "depth": 2, "batch_size": 256,
                "gates": {"demo": {"calibration.chi2_ndf": {"max": 60.0}, "logloss_gap": {"max": 0.2}}}},
}
GENERATOR = {"gen_gan": {**{k: v for k, v in COMMON.items() if k not in ("label", "oracle", "gates")},
                         "family": "generator", "targets": ["y1", "y2"], "method": "gan", "epochs": 2, "width": 16,
                         "depth": 2, "batch_size": 256, "noise_dim": 3}}  # no gates: validated after 2 epochs
SYNTH = {"n": 6000, "seed": 3}


@pytest.fixture(scope="module")
def built(tmp_path_factory, mlflow_store_template):
    """A scratch project where both models went through train -> export -> validate with MLflow on."""
    root = scratch_repo(tmp_path_factory.mktemp("recorded"), {**MODELS, **GENERATOR})
    write_synthetic(root, "synth", **SYNTH)
    shutil.copy(mlflow_store_template, root / runs.LOCAL_DB)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FLASHSIM_MLFLOW", "on")
        mp.setenv(provenance.ENV_RULE, "train_model")
        for name in [*MODELS, *GENERATOR]:
            mp.setenv(provenance.ENV_WILDCARDS, f"model={name}")
            for verb in ("train", "export", "validate"):
                assert flashsim([verb, name]) == 0, f"flashsim {verb} {name}"
    return root


def store(root: Path) -> runs.Store:
    return runs.Store(runs.local_uri(root), root)


def test_every_driver_job_is_recorded_in_mlflow(built):
    client = store(built).client
    mv = client.get_model_version_by_alias("clf_gbdt", "validated")
    assert str(client.get_model_version_by_alias("clf_gbdt", "candidate").version) == str(mv.version)
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.n_estimators"] == "30" and run.data.params["seed"] == "7"
    assert len(client.get_metric_history(mv.run_id, "val_loss")) == 30  # one point per boosting iteration
    tags = run.data.tags
    for split in ("train", "val"):
        path = built / "results" / "prepared" / "synth" / f"{split}.parquet"
        assert tags[f"data.synth.{split}.sha256"] == provenance.file_sha256(path)
    assert tags["data.synth.test.sha256"]  # export and validate read the test split
    assert tags["train.snakemake.rule"] == "train_model" and tags["train.snakemake.wildcards"] == "model=clf_gbdt"
    assert tags["device"] == "cpu" and tags["validation.gates"] == "passed"
    assert {"train.host", "export.host", "validate.host"} <= set(tags)
    report = json.loads((built / "reports/clf_gbdt/metrics.json").read_text())
    assert run.data.metrics["validation.logloss_gap"] == pytest.approx(report["metrics"]["logloss_gap"])
    assert mv.tags["onnx_sha256"] == provenance.file_sha256(built / "models/clf_gbdt.onnx")
    names = {f.path for f in client.list_artifacts(mv.run_id, "model")}
    assert names == {"model/clf_gbdt.onnx", "model/clf_gbdt.json"}
    assert any(f.path.endswith("index.html") for f in client.list_artifacts(mv.run_id, "report"))
    torch_run = client.get_run(client.get_model_version_by_alias("clf_mlp", "validated").run_id)
    assert len(client.get_metric_history(torch_run.info.run_id, "val_loss")) == 3  # one point per epoch


def test_compare_lists_every_model_with_metrics_and_aliases(built, monkeypatch, capsys):
    monkeypatch.chdir(built)
    monkeypatch.setenv("FLASHSIM_MLFLOW", "on")
    capsys.readouterr()
    assert flashsim(["compare", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert sorted(table) == sorted([*MODELS, *GENERATOR])
    for versions in (table[name] for name in MODELS):
        (v,) = versions
        assert v["aliases"] == ["candidate", "validated"] and v["gates"] == "passed"
        assert {"validation.logloss_gap", "validation.calibration.chi2_ndf"} <= set(v["metrics"])
        assert set(v["gate_limits"]) == {"logloss_gap", "calibration.chi2_ndf"}
    assert flashsim(["compare", "clf_gbdt"]) == 0
    text = capsys.readouterr().out
    gap = table["clf_gbdt"][0]["metrics"]["validation.logloss_gap"]
    assert re.search(rf"\nlogloss_gap \(<= 0\.08\) +{gap:.4g}\n", text), text  # default: gated metrics + gates
    assert "validate_seconds" not in text


def _code_at(sha: str, patch: str, dest: Path) -> Path:
    """The source tree that ran: `git archive` of the commit, plus the recorded patch of a dirty tree."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    if patch:
        subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], input=patch.encode(), cwd=dest, check=True)
    return dest


@pytest.mark.parametrize("name", list(MODELS))
def test_provenance_rebuilds_the_onnx_bit_for_bit(built, tmp_path, monkeypatch, capsys, name):
    import mlflow.artifacts

    monkeypatch.chdir(built)
    monkeypatch.setenv("FLASHSIM_MLFLOW", "on")
    info = model_registry.provenance(store(built), f"{name}@validated")
    registered = Path(mlflow.artifacts.download_artifacts(
        f"models:/{name}@validated", dst_path=str(tmp_path / "registered"), tracking_uri=runs.local_uri(built)))
    registered_onnx = registered / "model.onnx"  # the MLflow ONNX model (MLmodel + model.onnx)
    assert provenance.file_sha256(registered_onnx) == info["onnx_sha256"]

    # 1. the code: the recorded commit (+ patch when the tree was dirty)
    code = _code_at(info["git"]["sha"], info["provenance"]["train"].get("git_patch", ""), tmp_path / "code")
    # 2. the configuration: params.yaml as the job saw it
    rebuild = tmp_path / "rebuild"
    capsys.readouterr()
    assert flashsim(["provenance", f"{name}@validated", "--restore", str(rebuild)]) == 0
    shutil.copytree(code / "schemas", rebuild / "schemas")
    # 3. the data, checked against the recorded hashes (here regenerated; normally `dvc pull`)
    write_synthetic(rebuild, "synth", **SYNTH)
    for label in ("synth.train", "synth.val"):
        split = label.split(".")[1]
        assert provenance.file_sha256(rebuild / f"results/prepared/synth/{split}.parquet") == \
            info["data"][label]["sha256"]
    # 4. retrain + export with that code, in a fresh process
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "FLASHSIM_MLFLOW": "off"}
    script = f"from flashsim.cli import main; raise SystemExit(main(['train', '{name}']) or main(['export', '{name}']))"
    out = subprocess.run([sys.executable, "-c", script], cwd=rebuild, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (rebuild / "models" / f"{name}.onnx").read_bytes() == registered_onnx.read_bytes()


@pytest.mark.parametrize("name", ["clf_gbdt", "gen_gan"])
def test_registered_model_loads_with_pyfunc_and_predicts_as_onnxruntime(built, monkeypatch, name):
    """`models:/NAME@validated` is an MLflow ONNX model: tensor signature, input example, pyfunc predictions equal
    to onnxruntime's on the exported file (a classifier with `x`; a generator with `x` and `noise`)."""
    import mlflow.pyfunc
    import numpy as np
    import onnxruntime

    uri = runs.local_uri(built)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}@validated")
    inputs = {s.name: s.shape for s in model.metadata.get_input_schema().inputs}
    assert list(inputs) == (["x", "noise"] if name == "gen_gan" else ["x"])
    assert inputs["x"] == (-1, 3) and inputs.get("noise", (-1, 3)) == (-1, 3)
    assert [s.name for s in model.metadata.get_output_schema().inputs] == ["y"]
    assert model.metadata.saved_input_example_info is not None
    rng = np.random.default_rng(5)
    feed = {k: rng.normal(size=(64, shape[1])).astype(np.float32) for k, shape in inputs.items()}
    feed["x"][:, 0] = rng.uniform(2e3, 5e4, 64)  # p in MeV/c
    feed["x"][:, 1] = rng.uniform(2.0, 5.0, 64)  # eta
    got = model.predict(feed)
    sess = onnxruntime.InferenceSession(str(built / "models" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    (want,) = sess.run(["y"], feed)
    assert np.array_equal(np.asarray(got["y"]), want) and np.isfinite(want).all()
    mv = store(built).client.get_model_version_by_alias(name, "validated")
    assert mv.source.startswith("models:/m-") and mv.tags["mlflow_model"] == "onnx"
