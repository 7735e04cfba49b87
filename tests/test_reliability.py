"""Reliability and security of a job: no secrets or file contents in MLflow provenance, clean kills (SIGTERM,
SIGINT, SIGKILL at set points), one trainer per output folder, stale runs failed by a rerun, NaN/inf visible."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_mlops_runs import make_project

from flashsim.io import atomic
from flashsim.mlops import provenance, runs

ROOT = Path(__file__).resolve().parents[1]
SECRET = "pw-" + os.urandom(6).hex()  # random: a leak cannot come from a source file holding it


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    return {**env, "FLASHSIM_MLFLOW": "on", "PYTHONPATH": f"{root / 'src'}{os.pathsep}{ROOT / 'src'}", **extra}


def leaks(paths: list[Path], secret: str) -> list[str]:
    """Files under ``paths`` whose bytes contain ``secret``."""
    found = []
    for top in paths:
        for p in [top] if top.is_file() else top.rglob("*") if top.exists() else []:
            if p.is_file() and secret.encode() in p.read_bytes():
                found.append(str(p))
    return found


# ------------------------------------------------------------------------------------------ provenance, secrets
def test_redact_uris():
    assert provenance.redact("http://user:pw@host:5000/x") == "http://***@host:5000/x"
    assert provenance.redact("see https://tok@h/p?a=1&token=abc&x=2") == "see https://***@h/p?a=1&token=***&x=2"
    assert "dead" not in provenance.redact("s3://b/k?X-Amz-Signature=dead&X-Amz-Credential=beef")
    assert provenance.redact("plain text a=b, root://eos//f.root") == "plain text a=b, root://eos//f.root"


def test_git_state_lists_untracked_files_and_caps_the_patch(tmp_path):
    root = make_project(tmp_path / "p")
    (root / ".env").write_text(f"MLFLOW_TRACKING_PASSWORD={SECRET}\n")
    (root / "big.bin").write_bytes(os.urandom(50_000))
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\n# " + "x" * 5000 + "\n")
    state = provenance.git_state(root, cap=1000)
    assert SECRET not in json.dumps(state)
    listed = {u["path"]: u for u in state["untracked"]}
    assert set(listed) == {".env", "big.bin"}
    assert listed["big.bin"]["size"] == 50_000
    assert listed["big.bin"]["sha256"] == provenance.file_sha256(root / "big.bin")
    assert state["patch_truncated"] and state["patch_bytes"] > 5000 and "patch cut at 1000" in state["patch"]
    assert state["dirty"] and "params.yaml" in state["patch"]


def test_planted_secrets_reach_no_store_log_or_record(tmp_path, record_property):
    """A ``.env`` holding a password in the code checkout and credentials in MLFLOW_TRACKING_URI (a server that
    does not answer: the run falls back to the local store): mlruns/, mlflow.db, logs/ and the local record hold
    neither secret."""
    root = make_project(tmp_path / "proj")
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".env").write_text(f"MLFLOW_TRACKING_PASSWORD={SECRET}\n")
    (root / "logs").mkdir()
    uri = f"http://flashsim:{SECRET}@127.0.0.1:9/?token={SECRET}x"
    with open(root / "logs" / "job.log", "w") as log:
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mlflow_worker.py"), "leaky", "1", "3", str(root)],
                              stdout=log, stderr=subprocess.STDOUT, env=_env(root, MLFLOW_TRACKING_URI=uri),
                              timeout=300)
    text = (root / "logs" / "job.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    out = json.loads(text.strip().splitlines()[-1])
    assert out["fallback"] and "unreachable" in text and "***" in text  # the warning is there, redacted
    assert (root / "mlruns").is_dir() and (root / "mlflow.db").is_file()
    found = leaks([root / "mlruns", root / "mlflow.db", root / "logs", root / "results"], SECRET)
    record_property("secrets_found", found)  # the fault campaign's summary (tests/faults.py)
    assert found == []
    from mlflow import MlflowClient

    run = MlflowClient(runs.local_uri(root)).get_run(out["run_id"])
    assert run.data.tags[runs.INTENDED_TAG] == "http://127.0.0.1:9/?token=***"  # userinfo moved to the env
    git = json.loads(Path(MlflowClient(runs.local_uri(root)).download_artifacts(
        out["run_id"], "provenance/train/git.json", str(tmp_path / "dl"))).read_text())
    assert ".env" in {u["path"] for u in git["untracked"]}


def test_credentials_move_from_uri_to_environment(monkeypatch):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u%40x:p%3Aw@host:5000")
    assert runs.credentials_to_env("http://u%40x:p%3Aw@host:5000") == "http://host:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "u@x" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "p:w"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://host:5000"
    assert runs.credentials_to_env("sqlite:///x.db") == "sqlite:///x.db"


def test_nonfinite_metrics_are_flagged(tmp_path, mlflow_store_template, monkeypatch):
    root = make_project(tmp_path / "p", mlflow_store_template)
    monkeypatch.setenv("FLASHSIM_MLFLOW", "on")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with runs.start_job("train", "nanmodel", root=root) as job:
        job.log_metrics({"loss": 1.0}, step=0)
        job.log_metrics({"loss": math.nan}, step=1)
        job.log_metrics({"loss": math.inf}, step=2)
    from mlflow import MlflowClient

    client = MlflowClient(runs.local_uri(root))
    assert [(m.step, m.value) for m in client.get_metric_history(job.run_id, "loss")] == [(0, 1.0)]
    assert sorted(m.step for m in client.get_metric_history(job.run_id, "loss.nonfinite")) == [1, 2]
    assert client.get_run(job.run_id).data.tags[f"{runs.NONFINITE_TAG}.loss"] == "nan at step 1"
    lines = [json.loads(x) for x in (root / "results/train/nanmodel/metrics.jsonl").read_text().splitlines()]
    assert math.isnan(lines[1]["loss"]) and math.isinf(lines[2]["loss"])


# ------------------------------------------------------------------------------------------ kills and locks
def start_kill_job(root: Path, model: str, seconds: float) -> tuple[subprocess.Popen, str]:
    """tests/kill_job.py through the real entry point; returns the process and its run id once it is READY."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "kill_job.py"), str(root), model, str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(root))
    line = proc.stdout.readline()
    assert line.startswith("READY"), proc.stderr.read()[-3000:] if proc.poll() is not None else line
    return proc, line.split()[1]


def temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{atomic.TMP_SUFFIX}"))


def run_status(root: Path, run_id: str) -> tuple[str, dict[str, str]]:
    with sqlite3.connect(root / runs.LOCAL_DB) as db:
        status = db.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()[0]
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
    return status, tags


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_remove_temporaries_and_end_run_killed(tmp_path, mlflow_store_template, sig, code):
    root = make_project(tmp_path / "p", mlflow_store_template)
    proc, run_id = start_kill_job(root, "m", 60)
    assert temporaries(root)  # the set point: an atomic output is open
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert temporaries(root) == [] and not (root / "models" / "m.onnx").exists()
    assert run_status(root, run_id)[0] == "KILLED"


def test_sigkill_debris_is_cleaned_by_the_rerun(tmp_path, mlflow_store_template):
    root = make_project(tmp_path / "p", mlflow_store_template)
    proc, run_id = start_kill_job(root, "m", 60)
    proc.kill()
    proc.wait(30)
    left = temporaries(root)
    assert left and left[0].startswith("models/.m.onnx.")  # SIGKILL leaves its temporary file ...
    assert run_status(root, run_id)[0] == "RUNNING"  # ... and its run RUNNING
    names = ["data/.raw.root.1.x.tmp", "data/sub/.flashsim.lock"]  # in a folder git tracks otherwise
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", *names], capture_output=True,
                             text=True)
    assert ignored.stdout.split() == names  # temporaries and locks are ignored by git (.dvcignore: the same)
    dvcignore = (ROOT / ".dvcignore").read_text().splitlines()
    assert ".*.tmp" in dvcignore and ".flashsim.lock" in dvcignore
    rerun, rerun_id = start_kill_job(root, "m", 0)
    assert rerun.wait(60) == 0
    assert temporaries(root) == [] and (root / "models" / "m.onnx").read_bytes() == b"complete"
    status, tags = run_status(root, run_id)
    assert status == "FAILED" and "gone" in tags[runs.STALE_TAG]
    assert run_status(root, rerun_id)[0] == "FINISHED"


def test_second_trainer_refuses_while_the_folder_is_held(tmp_path, mlflow_store_template):
    root = make_project(tmp_path / "p", mlflow_store_template)
    first, first_id = start_kill_job(root, "m", 60)
    try:
        second = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_job.py"), str(root), "m", "0"],
                                capture_output=True, text=True, env=_env(root), timeout=120)
        assert second.returncode == 2
        assert f"results/train/m is in use by pid {first.pid}" in second.stderr
        assert "another training of m is writing it" in second.stderr
        assert run_status(root, first_id)[0] == "RUNNING"  # the holder's run is untouched
    finally:
        first.terminate()
        first.wait(60)
    assert first.returncode == 143
