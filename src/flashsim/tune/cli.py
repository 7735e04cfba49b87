"""``flashsim tune NAME``: an Optuna study over the ``tune:`` block of model NAME (docs/tuning.md).

Without options: create the study in the embedded journal file (``results/tune/NAME/journal.log``), run trials in
this process, write ``results/tune/NAME/report.{json,md}`` and the override proposal. ``--workers N``: N local
worker processes (one per GPU of the node, round robin). ``--create-only`` / ``--worker`` / ``--report`` are the
three steps the Snakemake target ``tune_NAME`` runs as separate jobs (rules/tune.smk). ``--accept`` copies the
reviewed proposal to ``tuned/NAME.yaml``, which the workflow merges over the entry (only that model reruns).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
from pathlib import Path

from flashsim.errors import ConfigError, FlashsimError, InputError

HELP = "hyperparameter study of a model's tune: block (Optuna; local or PostgreSQL storage, workers, pruning)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="model name (a key of params.yaml models:, species expanded) with a tune: block")
    p.add_argument("--params", default=None, help="params file (default: params.yaml of the repository)")
    p.add_argument("--storage", default=None,
                   help="journal:PATH | sqlite:///PATH | postgresql://USER@HOST:PORT/DB (password from PGPASSWORD "
                        "or ~/.pgpass); default $FLASHSIM_TUNE_STORAGE, else results/tune/NAME/journal.log")
    p.add_argument("--study", default=None, help="study name (default: NAME)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1: this process)")
    step = p.add_mutually_exclusive_group()
    step.add_argument("--create-only", action="store_true", help="create the study and exit (before workers)")
    step.add_argument("--worker", action="store_true", help="attach to an existing study and run trials")
    step.add_argument("--report", action="store_true", help="write the report and override proposal only")
    step.add_argument("--accept", action="store_true",
                      help="copy the reviewed proposal results/tune/NAME/override.yaml to tuned/NAME.yaml")


def run(args: argparse.Namespace) -> int:
    from flashsim.config import load_params, repo_root
    from flashsim.models import get_spec
    from flashsim.tune import storage as S
    from flashsim.tune.space import load_tune
    from flashsim.tune.worker import tune_dir
    from flashsim.tuned import override_path, read_override

    root = repo_root()
    study_name = args.study or args.name
    if args.accept:
        src = tune_dir(root, study_name) / "override.yaml"
        if not src.exists():
            raise ConfigError(f"{src}: no override proposal (run `flashsim tune {args.name}` first)")
        dest = override_path(root, args.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        read_override(dest)
        print(f"{dest}: accepted; commit it (git add {dest.relative_to(root)}) and rerun the workflow")
        return 0
    params = load_params(args.params) if args.params else load_params()
    tc = load_tune(args.name, params)  # every configuration error before any trial or storage
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    spec = get_spec(args.name, params, root)
    missing = [p for p in (spec.prepared("train"), spec.prepared("val")) if not p.exists()]
    if missing and not args.report:
        raise InputError(f"prepared data missing (run `flashsim prepare {spec.sample}` or snakemake "
                         f"{missing[0].relative_to(root)})", file=str(missing[0]))
    url = S.resolve_url(args.storage, root, study_name)
    try:
        return _run(args, params, tc, spec, url, study_name, root)
    except FlashsimError:
        raise
    except Exception as err:
        if type(err).__module__.startswith(("sqlalchemy", "psycopg")):
            raise ConfigError(f"tune storage {S.redact(url)}: {type(err).__name__}: "
                              f"{S.redact(str(err)).splitlines()[0]}") from None
        raise


def _run(args, params, tc, spec, url, study_name, root: Path) -> int:
    from flashsim.tune.report import summarize
    from flashsim.tune.worker import create_study, run_worker, spawn_workers

    if args.worker:
        run_worker(args.name, params, url, study_name, root, int(os.environ.get("FLASHSIM_TUNE_WORKER", "0")))
        return 0
    create_study(tc, spec, url, study_name)
    if args.create_only:
        print(f"study {study_name} ready")
        return 0
    if not args.report:
        if args.workers == 1:
            run_worker(args.name, params, url, study_name, root)
        else:
            procs = spawn_workers(args.name, args.workers, url, study_name, args.params, root)
            try:
                codes = [p.wait() for p in procs]
            except KeyboardInterrupt:
                for p in procs:
                    p.send_signal(signal.SIGINT)
                raise
            if any(codes):
                log.warning("worker exit codes %s (logs in %s)", codes, Path("results/tune") / study_name / "workers")
                if all(codes):
                    raise FlashsimError(f"every worker failed: see results/tune/{study_name}/workers/*.log")
    import optuna

    from flashsim.tune import storage as S

    rep = summarize(optuna.load_study(study_name=study_name, storage=S.open_storage(url)), tc, url, root,
                    study_name)
    _print(rep, study_name)
    return 0


def _print(rep: dict, study_name: str) -> None:
    states = ", ".join(f"{k.lower()} {v}" for k, v in rep["states"].items() if v)
    print(f"study {study_name}: {states}")
    if "best" in rep:
        print(f"best trial {rep['best']['trial']}: {rep['best']['values']} params {rep['best']['params']}")
    if "improved" in rep:
        print(f"{'improved on' if rep['improved'] else 'did NOT improve on'} the baseline (params.yaml values): "
              f"{rep['baseline']['values']}")
    if "override" in rep:
        print(f"proposal: {rep['override']} (review, then flashsim tune {rep['model']} --accept)")
