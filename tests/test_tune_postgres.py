"""A study on a real PostgreSQL server on loopback (scripts/start-postgres.sh): 4 local workers on one study; a
worker SIGKILLed mid-trial leaves its trial to the heartbeat, which fails it, and the retry callback re-runs the
same parameters; no trial stays RUNNING. The password never appears in outputs or reports."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import scratch_repo, write_synthetic
from servers import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))


@pytest.fixture(scope="module")
def postgres():
    """(storage URL without password, password) of a server started by scripts/start-postgres.sh."""
    if not PG_BINS:
        pytest.skip("PostgreSQL is not installed (scripts/setup-system.sh installs it)")
    work = tempfile.mkdtemp(prefix="flashsim-pg-")  # under /tmp: the postgres user must reach it
    password = secrets.token_urlsafe(16)
    env = {**os.environ, "FLASHSIM_PG_DIR": work, "FLASHSIM_PG_PORT": str(free_port()), "PGPASSWORD": password}
    try:
        start = subprocess.run([str(ROOT / "scripts/start-postgres.sh")], env=env, capture_output=True, text=True,
                               timeout=120)
        assert start.returncode == 0, start.stdout + start.stderr
        assert password not in start.stdout + start.stderr
        url = start.stdout.strip().split()[-1]
        assert url.startswith("postgresql://flashsim@127.0.0.1:")
        yield url, password
    finally:
        subprocess.run([str(ROOT / "scripts/stop-postgres.sh")], env=env, capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)


def test_four_workers_one_killed(tmp_path, postgres, monkeypatch):
    import optuna
    from optuna.trial import TrialState

    url, password = postgres
    monkeypatch.setenv("PGPASSWORD", password)
    gen = {"family": "generator", "sample": "synth", "features": ["p", "eta", "x1"], "targets": ["y1", "y2"],
           "method": "flow", "width": 16, "depth": 2, "epochs": 4, "batch_size": 128, "lr": 1.0e-3,
           "validation_rows": 500, "bins": {"p": "p", "eta": "eta", "n_p": 2, "n_eta": 2},
           "tune": {"n_trials": 6, "pruner": {"name": "none"},
                    "params": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}}}}
    root = scratch_repo(tmp_path, {"gen": gen})
    write_synthetic(root, n=3000)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FLASHSIM_TUNE_HEARTBEAT": "1"}
    log = open(tmp_path / "tune.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "flashsim", "tune", "gen", "--workers", "4", "--storage", url],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    storage = optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg://"))
    victim = None
    try:
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name="gen", storage=storage)
            except KeyError:
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                epochs = root / f"results/tune/gen/trials/{t.number:04d}/metrics.jsonl"
                if "pid" in t.user_attrs and epochs.exists() and epochs.read_text().strip():
                    os.kill(int(t.user_attrs["pid"]), signal.SIGKILL)  # mid-trial: an epoch done, more to go
                    victim = t
                    break
        assert victim is not None, "no running trial to kill"
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "tune.log").read_text()
    study = optuna.load_study(study_name="gen", storage=storage)
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[victim.number].state == TrialState.FAIL, output[-3000:]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == victim.params
    assert retries[0].state == TrialState.COMPLETE
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 6
    assert len({t.user_attrs["worker"] for t in trials}) == 4  # four workers took part
    rep = json.loads((root / "results/tune/gen/report.json").read_text())
    assert rep["storage"] == url.replace("postgresql://", "postgresql+psycopg://")
    assert rep["states"]["FAIL"] == 1 and rep["states"]["RUNNING"] == 0
    files = [output, *(p.read_text() for p in (root / "results/tune/gen").rglob("*") if p.suffix in
                       (".json", ".md", ".yaml", ".log"))]
    assert not [f for f in files if password in f]
