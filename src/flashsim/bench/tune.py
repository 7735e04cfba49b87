"""Benchmark ``tune``: the study storages and the demo study (``reports/bench/tune.json``).

- ask/tell operations per second (one op = ``ask`` + ``tell`` of a trivial trial, random sampler) with 1, 8 and 32
  concurrent worker processes on one study, for the embedded journal file and a PostgreSQL server (the one of
  ``$FLASHSIM_TUNE_STORAGE`` when it is a postgresql:// URL, else one started on loopback with
  scripts/start-postgres.sh in a temporary folder; skipped with the reason when PostgreSQL is not installed);
- the demo study: ``flashsim tune``'s objective on model ``resolution`` with its ``tune:`` block (demo scale,
  ``results/prepared/tracking`` of this repository, else a small sample of the reference simulation), one
  worker: trials per hour on this machine, and per trial the seconds outside training (storage, trial bookkeeping,
  ONNX export, validation) = trial wall time minus the training epochs' time.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HELP = "Optuna storages: ask/tell ops/s with 1/8/32 workers (journal file vs PostgreSQL); demo study trials/hour"
WORKERS = (1, 8, 32)


def _ask_tell(url: str, study_name: str, seconds: float, ready: mp.Queue, go, out: mp.Queue) -> None:
    import optuna

    from flashsim.tune.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url),
                              sampler=optuna.samplers.RandomSampler())
    study.get_trials(deepcopy=False)  # connected and warm
    ready.put(1)
    go.wait()
    n, stop = 0, time.time() + seconds
    while time.time() < stop:
        trial = study.ask()
        x = trial.suggest_float("x", -1.0, 1.0)
        study.tell(trial, x * x)
        n += 1
    out.put(n)


def ops_per_second(url: str, workers: int, seconds: float) -> dict:
    import optuna

    from flashsim.tune.storage import open_storage

    name = f"bench-{workers}-{secrets.token_hex(4)}"
    optuna.create_study(study_name=name, storage=open_storage(url))
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    ready: mp.Queue = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_ask_tell, args=(url, name, seconds, ready, go, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:  # every worker connected before the clock starts
        ready.get(timeout=300)
    go.set()
    counts = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    total = sum(counts)
    return {"workers": workers, "seconds": seconds, "ops": total, "ops_per_s": total / seconds,
            "ops_per_s_per_worker": total / seconds / workers}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    """A PostgreSQL storage URL (password in PGPASSWORD), or None when no server can be had."""
    url = os.environ.get("FLASHSIM_TUNE_STORAGE", "")
    if url.startswith("postgresql"):
        yield url
        return
    from flashsim.config import repo_root

    script = repo_root() / "scripts" / "start-postgres.sh"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) or not script.exists():
        yield None
        return
    work = tempfile.mkdtemp(prefix="flashsim-bench-pg-")
    old = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = secrets.token_urlsafe(16)
    env = {**os.environ, "FLASHSIM_PG_DIR": work, "FLASHSIM_PG_PORT": str(_free_port())}
    try:
        out = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120, check=True).stdout
        yield out.strip().split()[-1]
    finally:
        subprocess.run([str(script.with_name("stop-postgres.sh"))], env=env, capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)
        if old is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = old


def storages(quick: bool) -> dict:
    from flashsim.tune.storage import redact, resolve_url

    seconds = 3.0 if quick else 10.0
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"journal:{Path(tmp) / 'journal.log'}"
        out["journal_file"] = [ops_per_second(url, w, seconds) for w in WORKERS]
    with postgres() as pg:
        if pg is None:
            out["postgresql"] = {"skipped": "PostgreSQL is not installed (scripts/setup-system.sh)"}
        else:
            url = resolve_url(pg, Path("."), "bench")
            out["postgresql"] = [ops_per_second(url, w, seconds) for w in WORKERS]
            out["postgresql_url"] = redact(url)
    return out


def demo_study(params: dict, quick: bool) -> dict:
    """The resolution study's trials in one worker; trials/hour and seconds per trial outside training."""
    import optuna
    import yaml

    from flashsim.config import repo_root
    from flashsim.tune import storage as S
    from flashsim.tune.space import load_tune

    root = repo_root()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(root / "schemas", work / "schemas")
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        prepared = root / "results" / "prepared" / "tracking"
        if (prepared / "val.parquet").exists():
            (work / "results" / "prepared").mkdir(parents=True)
            (work / "results" / "prepared" / "tracking").symlink_to(prepared)
            source = str(prepared.relative_to(root))
        else:
            _tracking_sample(work / "results" / "prepared" / "tracking", 20000 if quick else 100000, params["seed"])
            source = "reference simulation (generated for the benchmark)"
        n_trials = 2 if quick else None
        cwd = os.getcwd()
        os.chdir(work)
        try:
            p = yaml.safe_load((work / "params.yaml").read_text())
            if n_trials:
                p["models"]["resolution"]["tune"]["n_trials"] = n_trials
            (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "flashsim", "tune", "resolution"], cwd=work,
                                  env={**os.environ, "FLASHSIM_MLFLOW": os.environ.get("FLASHSIM_MLFLOW", "off")},
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                return {"error": proc.stderr[-2000:]}
            from flashsim.config import load_params

            tc = load_tune("resolution", load_params(work / "params.yaml"))
            study = optuna.load_study(study_name="resolution", storage=S.open_storage(
                S.default_url(work, "resolution")))
            rep = json.loads((work / "results/tune/resolution/report.json").read_text())
        finally:
            os.chdir(cwd)
        per_trial = []
        for t in study.get_trials(deepcopy=False):
            if t.datetime_complete is None:
                continue
            lines = (work / f"results/tune/resolution/trials/{t.number:04d}/metrics.jsonl").read_text().splitlines()
            train = sum(json.loads(x).get("epoch_seconds", 0.0) for x in lines)
            total = (t.datetime_complete - t.datetime_start).total_seconds()
            per_trial.append({"number": t.number, "state": t.state.name, "seconds": total, "training_seconds": train,
                              "outside_training_seconds": total - train})
    done = len(per_trial)
    return {"model": "resolution", "data": source, "fixed": tc.fixed, "trials": done, "wall_seconds": wall,
            "trials_per_hour": 3600.0 * done / wall,
            "trial_seconds_mean": sum(t["seconds"] for t in per_trial) / max(done, 1),
            "outside_training_seconds_mean": sum(t["outside_training_seconds"] for t in per_trial) / max(done, 1),
            "improved_over_default": rep.get("improved"), "best": rep.get("best"), "baseline": rep.get("baseline"),
            "per_trial": per_trial}


def _tracking_sample(out: Path, n: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flashsim.detsim import tracking
    from flashsim.seeding import rng_factory

    chunks = list(tracking.chunks(n, n, rng_factory(seed, "tracking"), {}))
    cols = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    u = np.random.default_rng(seed).random(int(cols["evtNumber"].max()) + 1)[cols["evtNumber"]]
    out.mkdir(parents=True, exist_ok=True)
    for split, m in (("train", u < 0.6), ("val", (u >= 0.6) & (u < 0.8)), ("test", u >= 0.8)):
        pq.write_table(pa.table({k: v[m] for k, v in cols.items()}), out / f"{split}.parquet")


def run(quick: bool, params: dict) -> dict:
    load = os.getloadavg()  # shared machines: the figures are only as clean as the load they ran under
    out = {"storages": storages(quick), "demo_study": demo_study(params, quick)}
    return {**out, "load_average_before": load, "load_average_after": os.getloadavg(), "cpus": os.cpu_count()}


def summary(result: dict) -> str:
    lines = []
    for kind in ("journal_file", "postgresql"):
        rows = result["storages"].get(kind)
        if isinstance(rows, list):
            lines.append(f"{kind}: " + ", ".join(f"{r['workers']} workers {r['ops_per_s']:.0f} ops/s" for r in rows))
        else:
            lines.append(f"{kind}: {rows}")
    d = result["demo_study"]
    if "error" in d:
        lines.append(f"demo study failed: {d['error']}")
    else:
        lines.append(f"demo study ({d['model']}): {d['trials']} trials in {d['wall_seconds']:.0f} s = "
                     f"{d['trials_per_hour']:.0f} trials/h; {d['outside_training_seconds_mean']:.1f} s per trial "
                     f"outside training; improved over the default: {d['improved_over_default']}")
    return "\n".join(lines)
