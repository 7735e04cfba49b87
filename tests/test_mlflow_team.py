"""The team's authenticated MLflow server (scripts/start-mlflow.sh: basic-auth, 4 workers) on loopback: who may
do what, and 8 jobs logging into the SAME experiment and registering versions of the SAME model at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from test_mlops_runs import make_project

from flashsim.mlops import runs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _client(url: str, user: str | None, password: str | None, monkeypatch):
    from mlflow import MlflowClient

    for key, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(url)


def test_anonymous_and_wrong_password_are_refused(team_mlflow, monkeypatch):
    from mlflow.exceptions import MlflowException

    api = f"{team_mlflow.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(api, timeout=10).status_code == 401
    assert requests.get(api, auth=("alice", "not-her-password"), timeout=10).status_code == 401
    assert requests.get(api, auth=("alice", team_mlflow.users["alice"]), timeout=10).status_code == 200
    with pytest.raises(MlflowException, match=r"401|nauthorized|credentials"):
        _client(team_mlflow.url, None, None, monkeypatch).create_experiment("anonymous-exp")
    with pytest.raises(MlflowException, match=r"401|nauthorized|credentials"):
        _client(team_mlflow.url, "alice", "wrong-password-x", monkeypatch).create_experiment("wrong-pw-exp")


def test_job_with_credentials_logs_and_registers(team_mlflow, tmp_path, monkeypatch, record_property):
    """A training job given http://USER:PW@host logs its run and registers its model; the password is nowhere in
    the job's output, its local record or the server's stores."""
    root = make_project(tmp_path / "proj")
    env = {**os.environ, "FLASHSIM_MLFLOW": "on", "MLFLOW_TRACKING_URI": team_mlflow.uri_for("ci"),
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mlflow_worker.py"), "authjob", "3", "5", str(root)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uri"] == team_mlflow.url and not out["fallback"] and out["version"] == "1"
    client = _client(team_mlflow.url, "ci", team_mlflow.users["ci"], monkeypatch)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(out["run_id"], "loss")] == out["losses"]
    mv = client.get_model_version_by_alias("authjob", "candidate")
    assert mv.run_id == out["run_id"] and mv.tags[runs_sha_tag()] == out["onnx_sha256"]
    secret = team_mlflow.users["ci"].encode()
    assert secret not in (proc.stdout + proc.stderr).encode()
    leaks = [str(p) for d in (root, team_mlflow.dir) for p in d.rglob("*") if p.is_file() and secret in p.read_bytes()]
    record_property("secrets_found", leaks)  # the fault campaign's summary (tests/faults.py)
    assert leaks == []


def test_user_without_permission_cannot_write(team_mlflow, monkeypatch):
    from mlflow.exceptions import MlflowException

    alice = _client(team_mlflow.url, "alice", team_mlflow.users["alice"], monkeypatch)
    exp = alice.create_experiment(f"alice-only-{time.time_ns()}")
    run_id = alice.create_run(exp).info.run_id
    alice.log_metric(run_id, "x", 1.0)
    bob = _client(team_mlflow.url, "bob", team_mlflow.users["bob"], monkeypatch)
    assert bob.get_run(run_id).data.metrics["x"] == 1.0  # default permission READ: the team sees it
    with pytest.raises(MlflowException, match=r"403|ermission"):
        bob.log_metric(run_id, "x", 2.0)
    with pytest.raises(MlflowException, match=r"403|ermission"):
        bob.create_run(exp)
    alice = _client(team_mlflow.url, "alice", team_mlflow.users["alice"], monkeypatch)
    assert [m.value for m in alice.get_metric_history(run_id, "x")] == [1.0]


def test_eight_jobs_share_one_experiment_and_model(team_mlflow, tmp_path, monkeypatch):
    """8 processes log into the same experiment and register versions of the same model through a 4-worker server,
    released together: they overlap; no run is lost, duplicated or orphaned; versions are unique; every metric
    history is exact; the alias ``candidate`` ends on the newest version."""
    name, epochs, n = "shared", 20, 8
    go = tmp_path / "go"
    env = {**os.environ, "FLASHSIM_MLFLOW": "on", "MLFLOW_TRACKING_URI": team_mlflow.uri_for("ci"),
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "mlflow_worker.py"), name, str(i), str(epochs),
                               str(make_project(tmp_path / f"proj{i}")), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True) for i in range(n)]
    time.sleep(2)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    client = _client(team_mlflow.url, "ci", team_mlflow.users["ci"], monkeypatch)
    exp = client.get_experiment_by_name(runs.EXPERIMENT.format(model=name))
    found = client.search_runs([exp.experiment_id], max_results=100)
    # no run lost, duplicated or orphaned: exactly the 8 jobs' runs, all FINISHED, one per seed
    assert sorted(r.info.run_id for r in found) == sorted(r["run_id"] for r in results)
    assert {r.info.status for r in found} == {"FINISHED"}
    assert sorted(r.data.params["seed"] for r in found) == sorted(str(i) for i in range(n))
    # they overlapped: every run started before any run ended
    assert max(r.info.start_time for r in found) < min(r.info.end_time for r in found)
    for r in results:
        assert not r["fallback"], r
        history = client.get_metric_history(r["run_id"], "loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(enumerate(r["losses"]))
        assert len(client.get_metric_history(r["run_id"], "accuracy")) == epochs
    # registry: 8 unique versions 1..8, one per run, each holding that run's ONNX bytes
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, n + 1))
    assert sorted(v.run_id for v in versions) == sorted(r["run_id"] for r in results)
    by_run = {r["run_id"]: r for r in results}
    for v in versions:
        assert v.tags[runs_sha_tag()] == by_run[v.run_id]["onnx_sha256"] and by_run[v.run_id]["version"] == v.version
    assert client.get_model_version_by_alias(name, "candidate").version == str(n)


def runs_sha_tag() -> str:
    from flashsim.mlops.model_registry import SHA_TAG

    return SHA_TAG
