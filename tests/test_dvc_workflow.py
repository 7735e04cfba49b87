"""`dvc repro` (the wrapper stage around snakemake) and `snakemake` agree, on a copy of this project reduced to one
small sample and two models (and without the flash-simulation pipeline, which would compile and run the chain):
after editing one model's params DVC reports the stage stale and Snakemake reruns only that model's jobs;
the experiment loop of docs/operations.md: `dvc exp run -S models.NAME.KEY=VALUE` reruns only that model's jobs
(one MLflow parent run named after the experiment, the model's run its child), `dvc exp show --only-changed`
shows the changed key and that model's validation metrics, `dvc exp apply` + a commit of dvc.lock land it, and
`dvc metrics diff` against the previous commit has its baseline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("acceptance", "efficiency")
SMALL = {  # hyperparameters small enough for a test, gates loose: this is about the workflow, not the physics
    "acceptance": {"n_estimators": 15, "num_leaves": 8, "validation_rows": 2000},
    "efficiency": {"epochs": 2, "width": 16, "depth": 2, "batch_size": 512, "validation_rows": 2000},
}
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out.stdout + out.stderr


def copy_project(dest: Path) -> Path:
    """The working tree's files (tracked and untracked, not ignored) -> dest, as a fresh git repository."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file() and not name.startswith("tests/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def drop_pipeline(snakefile: Path) -> None:
    """Without rules/runtime.smk (C-ABI builds and the end-to-end chain: not what this test is about)."""
    lines = snakefile.read_text().splitlines(keepends=True)
    snakefile.write_text("".join(x for x in lines if "runtime" not in x))


def reduce_params(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    keep = {params["models"][m]["sample"] for m in MODELS}
    params["detsim"]["samples"] = {s: {**params["detsim"]["samples"][s], "size": {"demo": 6000, "full": 6000}}
                                   for s in keep}
    params["inputs"] = {s: params["inputs"][s] for s in keep}
    models = {}
    for name in MODELS:
        entry = {**params["models"][name], **SMALL[name]}
        entry["gates"] = {"demo": {}, "full": {}}
        models[name] = entry
    params["models"] = models
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def planned_outputs(dry_run: str) -> list[str]:
    """The output files of the jobs a `snakemake -n` listing plans."""
    return [f for line in dry_run.splitlines() if line.strip().startswith("output:")
            for f in line.split(":", 1)[1].split(",")]


def mtimes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((root / "models").glob("*.onnx"))}


def test_dvc_repro_and_snakemake_agree(tmp_path, mlflow_store_template):
    proj = copy_project(tmp_path / "proj")
    reduce_params(proj / "params.yaml")
    drop_pipeline(proj / "Snakefile")
    env = {**os.environ, "FLASHSIM_MLFLOW": "off", "PYTHONPATH": str(proj / "src")}
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    run([*git, "init", "-q"], proj, env)
    run([*git, "add", "-A"], proj, env)
    run([*git, "commit", "-qm", "scratch"], proj, env)

    # 1. dvc repro = generate stages + the snakemake wrapper stage
    run(["dvc", "repro", "-q"], proj, env)
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert {"workflow", *(f"generate@{s}" for s in yaml.safe_load((proj / "params.yaml").read_text())["inputs"])} \
        <= set(lock["stages"])
    metrics = json.loads((proj / "reports" / "metrics.json").read_text())
    assert sorted(metrics) == sorted(MODELS)
    # 2. they agree: nothing to do for either
    assert "up to date" in run(["dvc", "status"], proj, env)
    assert "Nothing to be done" in run(["snakemake", "-n", "--cores", "1"], proj, env)

    # 3. edit one model's params: DVC reports the wrapper stale, Snakemake plans only that model's jobs
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["models"]["efficiency"]["lr"] = 1.0e-3
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run(["dvc", "status"], proj, env)
    assert "workflow:" in status and "params.yaml" in status and "models" in status, status
    assert "generate@" not in status, status  # the raw samples do not depend on model params
    plan = planned_outputs(run(["snakemake", "-n", "--cores", "1"], proj, env))
    assert any("efficiency" in o for o in plan) and not any("acceptance" in o for o in plan), plan
    before = mtimes(proj)
    run(["dvc", "repro", "-q"], proj, env)
    after = mtimes(proj)
    assert after["acceptance.onnx"] == before["acceptance.onnx"]  # untouched
    assert after["efficiency.onnx"] != before["efficiency.onnx"]  # retrained and re-exported
    assert "up to date" in run(["dvc", "status"], proj, env)
    assert "Nothing to be done" in run(["snakemake", "-n", "--cores", "1"], proj, env)

    # 4. an experiment with a changed hyperparameter (dvc.lock committed: the baseline), recorded in MLflow
    run([*git, "add", "-A"], proj, env)
    run([*git, "commit", "-qm", "efficiency lr"], proj, env)
    assert "workflow" in run(["git", "show", "HEAD:dvc.lock"], proj, env)
    before = {**mtimes(proj), "efficiency.report": (proj / "reports/efficiency/metrics.json").stat().st_mtime_ns}
    shutil.copy(mlflow_store_template, proj / "mlflow.db")  # git-ignored, like mlruns/
    mlflow_env = {**env, "FLASHSIM_MLFLOW": "on"}
    run(["dvc", "exp", "run", "-q", "-n", "leaves4", "-S", "models.acceptance.num_leaves=4"], proj, mlflow_env)
    after = {**mtimes(proj), "efficiency.report": (proj / "reports/efficiency/metrics.json").stat().st_mtime_ns}
    assert after["acceptance.onnx"] != before["acceptance.onnx"]  # only that model's jobs reran
    assert after["efficiency.onnx"] == before["efficiency.onnx"]
    assert after["efficiency.report"] == before["efficiency.report"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], proj, env))
    exp = next(e for rev in shown for e in (rev.get("experiments") or []) if e.get("name") == "leaves4")
    data = exp["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["models"]["acceptance"]["num_leaves"] == 4
    assert set(data["metrics"]["reports/metrics.json"]["data"]) == set(MODELS)
    changed = run(["dvc", "exp", "show", "--only-changed", "--csv"], proj, env).splitlines()
    header = changed[0].split(",")
    assert "models.acceptance.num_leaves" in header, header
    assert any(h.startswith("acceptance.") for h in header), header  # its validation metrics
    assert not any(h.startswith(("models.efficiency.", "efficiency.")) for h in header), header
    assert len(header) < 40, header  # not the whole params.yaml

    # MLflow: the invocation is a parent run named after the experiment; only the rerun model is its child
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("flashsim/workflow").experiment_id])
    assert parent.info.run_name == "workflow leaves4" and parent.info.status == "FINISHED"
    assert parent.data.metrics["acceptance.passed"] == 1.0
    children = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [c.info.run_name for c in children] == ["acceptance leaves4"]

    # 5. land it: apply, commit params.yaml + dvc.lock; metrics diff against the previous commit
    run(["dvc", "exp", "apply", "leaves4"], proj, env)
    run([*git, "add", "params.yaml", "dvc.lock"], proj, env)
    run([*git, "commit", "-qm", "acceptance: num_leaves 4 (experiment leaves4)"], proj, env)
    landed = yaml.safe_load(run(["git", "show", "HEAD:params.yaml"], proj, env))
    assert landed["models"]["acceptance"]["num_leaves"] == 4
    assert run(["git", "status", "--porcelain"], proj, env).strip() == ""
    assert "up to date" in run(["dvc", "status"], proj, env)
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], proj, env))["reports/metrics.json"]
    assert any(k.startswith("acceptance.") and v.get("old") is not None for k, v in diff.items()), diff
    assert not any(k.startswith("efficiency.") for k in diff), diff  # unchanged model: no difference
