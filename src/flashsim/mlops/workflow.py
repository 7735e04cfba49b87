"""One MLflow run per Snakemake invocation (``snakemake``, ``dvc exp run``), parent of the model runs it touches.

``rules/mlops.smk`` calls :func:`start_parent` in ``onstart`` and :func:`finish_parent` in ``onsuccess`` /
``onerror``. The parent lives in the experiment ``flashsim/workflow``; its id and store go to the jobs through
``FLASHSIM_PARENT_RUN`` / ``FLASHSIM_PARENT_URI`` (inherited by local and Slurm jobs), and every model run a job
creates or continues gets ``mlflow.parentRunId`` = that id (:func:`flashsim.mlops.runs.parent_tags`). One
invocation's runs: ``mlflow.search_runs(search_all_experiments=True,
filter_string="tags.mlflow.parentRunId = '<id>'")``. On success the parent also holds every model's validation
metrics from ``reports/metrics.json`` (``<model>.<metric>``), so invocations compare as a whole.

The parent is created once, before any job, so concurrent jobs only read the variables; it is skipped when MLflow
is off, when a parent is already set (a nested invocation) and when the store cannot be opened.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from flashsim.mlops import runs
from flashsim.mlops.provenance import redact

log = logging.getLogger(__name__)

EXPERIMENT = "flashsim/workflow"
OWNER_ENV = "FLASHSIM_PARENT_OWNER"  # the pid that created the parent (only it ends the run)


def parent_name(git: dict) -> str:
    """``workflow <DVC_EXP_NAME>`` inside ``dvc exp run``, else ``workflow <sha8>[+dirty] <UTC time>``."""
    exp = os.environ.get("DVC_EXP_NAME", "").strip()
    if exp:
        return f"workflow {exp}"
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    return f"workflow {git['sha'][:8]}{'+dirty' if git['dirty'] else ''} {when}"


def start_parent(root: Path | None = None, argv: list[str] | None = None) -> str | None:
    """Create the invocation's run and export its id to the jobs; None when skipped (see the module docstring)."""
    from flashsim.config import load_params, repo_root
    from flashsim.mlops.provenance import code_root, git_state

    if not runs.enabled() or os.environ.get(runs.PARENT_RUN_ENV):
        return None
    root = (root or repo_root()).resolve()
    try:
        store, extra = runs.open_store(root)
        git = git_state(code_root(root))
        try:
            params = load_params(root / "params.yaml")
        except Exception:
            params = {}
        tags = {"flashsim.kind": "workflow", "git.sha": git["sha"], "git.dirty": str(git["dirty"]).lower(),
                "mlflow.source.git.commit": git["sha"], "mlflow.source.type": "JOB",
                "mlflow.source.name": "snakemake", "snakemake.argv": " ".join(argv if argv is not None
                                                                            else sys.argv)[:5000],
                "scale": str(params.get("scale", "")), "flashsim.params_hash": runs.params_hash(params), **extra}
        if os.environ.get("DVC_EXP_NAME"):
            tags["flashsim.dvc_exp"] = os.environ["DVC_EXP_NAME"]
        name = parent_name(git)
        with store.locked():
            exp = store.experiment_id(EXPERIMENT)
            run_id = store.client.create_run(exp, run_name=name, tags={"mlflow.runName": name, **tags}).info.run_id
    except Exception as err:  # the workflow must run without MLflow
        runs.warn(f"no MLflow parent run for this invocation ({err})")
        return None
    os.environ.update({runs.PARENT_RUN_ENV: run_id, runs.PARENT_URI_ENV: store.uri, OWNER_ENV: str(os.getpid())})
    print(f"flashsim: MLflow parent run {run_id} ({name!r}) in {redact(store.uri)}", file=sys.stderr)
    return run_id


def summary_metrics(path: Path) -> dict[str, float]:
    """``<model>.<metric>`` for every finite number of ``reports/metrics.json`` (booleans as 0/1)."""
    from flashsim.mlops.model_registry import scalar_metrics

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return scalar_metrics(data) if isinstance(data, dict) else {}


def finish_parent(status: str = "FINISHED", root: Path | None = None) -> None:
    """End the invocation's run (FINISHED or FAILED) with the summary metrics; no-op without a parent of ours."""
    from flashsim.config import repo_root

    run_id, uri = os.environ.get(runs.PARENT_RUN_ENV), os.environ.get(runs.PARENT_URI_ENV)
    if not run_id or not uri or os.environ.get(OWNER_ENV) != str(os.getpid()):
        return
    root = (root or repo_root()).resolve()
    try:
        store = runs.Store(uri, root)
        run = runs.Run("workflow", "workflow", None, root=root, store=store, run_id=run_id)
        if status == "FINISHED":
            run.log_metrics(summary_metrics(root / "reports" / "metrics.json"))
        run.close(status)
    except Exception as err:
        log.warning("could not end the MLflow parent run %s (%s)", run_id, err)
    for key in (runs.PARENT_RUN_ENV, runs.PARENT_URI_ENV, OWNER_ENV):
        os.environ.pop(key, None)
