"""MLflow records of a tuning study: one parent run per study, each trial a nested run under it.

The parent run is created once, when the study is created (its id is kept in the study's user attributes, so
every worker, on any node, nests its trials under it). A trial run holds the trial's params, its intermediate
metrics (step = epoch), its final metrics and its state (tag ``optuna.state``: COMPLETE, PRUNED, FAIL; MLflow
status FINISHED, KILLED, FAILED). The best trial's run is tagged ``tune.best=true`` and the parent records
the best trial. ``FLASHSIM_MLFLOW=off``: nothing is recorded. Storage URLs are logged redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flashsim.mlops import runs

log = logging.getLogger(__name__)

EXPERIMENT = "flashsim/tune/{model}"
PARENT_ATTR = "mlflow_parent_run_id"
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _store(root: Path) -> runs.Store | None:
    if not runs.enabled():
        return None
    try:
        return runs.open_store(root)[0]
    except Exception as err:  # tuning never stops for MLflow
        log.warning("MLflow store unavailable (%s): trials are not recorded in MLflow", err)
        return None


def start_study_run(model: str, study_name: str, root: Path, tags: Mapping[str, Any]) -> str | None:
    """Create the study's parent run (left RUNNING while workers attach); returns its id (None: MLflow off)."""
    store = _store(root)
    if store is None:
        return None
    with store.locked():
        exp = store.experiment_id(EXPERIMENT.format(model=model))
        run = store.client.create_run(exp, run_name=f"study {study_name}",
                                      tags={"flashsim.model": model, "tune.study": study_name,
                                            **{k: str(v) for k, v in tags.items()}})
    return run.info.run_id


def trial_run(model: str, parent_id: str | None, root: Path, number: int, params: Mapping[str, Any],
              outdir: Path) -> runs.Run:
    """A :class:`flashsim.mlops.runs.Run` for one trial, nested under ``parent_id`` (local record in ``outdir``)."""
    store = _store(root) if parent_id else None
    run = runs.Run(model, "tune", outdir, root=root, store=store)
    if store is not None:
        try:
            with store.locked():
                exp = store.client.get_run(parent_id).info.experiment_id
                run.run_id = store.client.create_run(
                    exp, run_name=f"trial {number}",
                    tags={"mlflow.parentRunId": parent_id, "flashsim.model": model,
                          "tune.trial": str(number)}).info.run_id
        except Exception as err:
            log.warning("cannot create the MLflow run of trial %d (%s)", number, err)
            run.store = None
    run.log_params(dict(params))
    return run


def end_trial(run: runs.Run, state: str, metrics: Mapping[str, float] | None = None) -> None:
    """Final metrics, the ``optuna.state`` tag and the matching MLflow status."""
    if metrics:
        run.log_metrics({f"final.{k}": v for k, v in metrics.items()})
    run.set_tags({"optuna.state": state})
    run.close(STATUS.get(state, "FAILED"))


def tag_best(root: Path, parent_id: str | None, best: Mapping[str, Any]) -> None:
    """Tag the best trial's run ``tune.best`` and record the best trial on the parent run."""
    store = _store(root) if parent_id else None
    if store is None:
        return
    client = store.client
    exp = client.get_run(parent_id).info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=5000)
    with store.locked():
        for child in children:
            is_best = child.data.tags.get("tune.trial") == str(best.get("trial"))
            if is_best or child.data.tags.get("tune.best") == "true":
                client.set_tag(child.info.run_id, "tune.best", str(is_best).lower())
        client.set_tag(parent_id, "tune.best_trial", str(best.get("trial")))
        for k, v in (best.get("values") or {}).items():
            client.log_metric(parent_id, f"best.{k}", float(v))


def end_study_run(root: Path, parent_id: str | None) -> None:
    store = _store(root) if parent_id else None
    if store is not None:
        with store.locked():
            store.client.set_terminated(parent_id, status="FINISHED")
