"""Studies and workers: create a study once, attach workers to it (this process, local processes, batch jobs).

A study is created exactly once (:func:`create_study`: the CLI before it starts workers, or the Snakemake rule
``tune_study`` before the worker jobs): several workers calling ``create_study`` on an empty PostgreSQL database
race on its schema. Workers then :func:`run_worker` with ``load_study``. The trial budget ``n_trials`` counts
COMPLETE and PRUNED trials over all workers (failed trials are retried, not counted).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from flashsim.errors import ConfigError
from flashsim.models import ModelSpec, get_spec
from flashsim.tune import storage as S
from flashsim.tune.space import TuneConfig, default_values, load_tune, make_pruner, make_sampler

log = logging.getLogger(__name__)

BASELINE_ATTR = "flashsim.baseline"
WORKER_ENV = "FLASHSIM_TUNE_WORKER"
RECOVERABLE = (RuntimeError, ArithmeticError, ValueError)  # a diverging trial fails; the study goes on


def tune_dir(root: Path, name: str) -> Path:
    return Path(root) / "results" / "tune" / name


def create_study(tc: TuneConfig, spec: ModelSpec, url: str, study_name: str) -> Any:
    """Create the study (or return it if it exists): directions, the MLflow parent run, the baseline trial."""
    import optuna

    from flashsim.mlops import tuning

    storage = S.open_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        pass
    study = optuna.create_study(study_name=study_name, storage=storage, directions=tc.directions,
                                load_if_exists=True)
    if study.user_attrs.get("model"):
        return study  # created concurrently
    study.set_user_attr("model", tc.model)
    study.set_user_attr("metrics", tc.metric_names)
    parent = tuning.start_study_run(tc.model, study_name, spec.root,
                                    {"tune.storage": S.redact(url), "tune.objective":
                                     ",".join(tc.metric_names), "tune.directions": ",".join(tc.directions)})
    if parent:
        study.set_user_attr(tuning.PARENT_ATTR, parent)
    from flashsim.models import family_class

    base = default_values(tc, family_class(spec.family)(spec).cfg)  # the entry's values, family defaults filled
    if tc.enqueue_default and base:
        study.enqueue_trial(base, user_attrs={BASELINE_ATTR: True})
    log.info("created study %s in %s", study_name, S.redact(url))
    return study


def _objective(tc: TuneConfig, spec: ModelSpec, study_name: str, parent: str | None):
    import optuna

    from flashsim.mlops import tuning
    from flashsim.tune.objective import Pruned, TrialReporter, run_trial

    def objective(trial: optuna.Trial) -> Any:
        values = {**tc.fixed, **{k: d.suggest(trial) for k, d in tc.space.items()}}
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        trial_dir = tune_dir(spec.root, study_name) / "trials" / f"{trial.number:04d}"
        if trial_dir.exists():
            shutil.rmtree(trial_dir)
        run = tuning.trial_run(tc.model, parent, spec.root, trial.number, values, trial_dir)
        if retried is not None:
            run.set_tags({"tune.retry_of": retried})
        trial.set_user_attr("worker", os.environ.get(WORKER_ENV, "0"))
        trial.set_user_attr("pid", os.getpid())

        def report(value: float, step: int) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        reporter = TrialReporter(run, tc.intermediate, None if tc.cost else report)
        try:
            metrics = run_trial(spec, values, trial_dir, reporter, tc.cost)
        except Pruned as err:
            tuning.end_trial(run, "PRUNED")
            raise optuna.TrialPruned(str(err)) from None
        except BaseException:
            tuning.end_trial(run, "FAIL")
            raise
        missing = [m for m in tc.metric_names if m not in metrics]
        if missing:
            tuning.end_trial(run, "FAIL")
            raise ConfigError(f"params.yaml: models/{tc.model}/tune/objective: {missing[0]!r} is not a "
                              f"validation metric of this model; metrics: {', '.join(sorted(metrics))}")
        for k, v in metrics.items():
            trial.set_user_attr(f"metric.{k}", v)
        tuning.end_trial(run, "COMPLETE", metrics)
        vals = [metrics[m] for m in tc.metric_names]
        return vals if tc.cost else vals[0]

    return objective


def run_worker(name: str, params: dict, url: str, study_name: str, root: Path | None = None,
               worker: int = 0) -> None:
    """Attach to the study and run trials until the budget (n_trials over all workers, or timeout) is spent."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    tc = load_tune(name, params)
    spec = get_spec(name, params, root)
    storage = S.open_storage(url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage,
                                  sampler=make_sampler(tc, spec.seed + worker), pruner=make_pruner(tc))
    except KeyError as err:
        raise ConfigError(f"no study {study_name!r} in {S.redact(url)} (create it first: flashsim tune "
                          f"{name} --create-only)") from err
    from flashsim.mlops import tuning

    callbacks = [MaxTrialsCallback(tc.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))] \
        if tc.n_trials else []
    if tc.n_trials and _counted(study) >= tc.n_trials:
        return
    study.optimize(_objective(tc, spec, study_name, study.user_attrs.get(tuning.PARENT_ATTR)),
                   n_trials=tc.n_trials, timeout=tc.timeout, callbacks=callbacks, catch=RECOVERABLE,
                   gc_after_trial=True)


def _counted(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def gpu_ids() -> list[str]:
    """The GPUs this node lets us use: ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``; empty without GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def spawn_workers(name: str, n: int, url: str, study_name: str, params_file: str | None,
                  root: Path) -> list[subprocess.Popen]:
    """Start ``n`` local worker processes on the study; each GPU of the node gets its own worker(s), round robin.
    The storage URL goes through the environment (never on a command line that ``ps`` shows)."""
    gpus = gpu_ids()
    procs = []
    logs = tune_dir(root, study_name) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        env = {**os.environ, S.ENV: url, WORKER_ENV: str(i)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        cmd = [sys.executable, "-m", "flashsim", "tune", name, "--worker", "--study", study_name]
        if params_file:
            cmd += ["--params", params_file]
        with open(logs / f"{i}.log", "w") as fh:
            procs.append(subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT))
    return procs
