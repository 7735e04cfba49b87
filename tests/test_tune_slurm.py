"""Tuning workers as batch jobs: `snakemake --profile gpu results/tune/resolution/report.json` on the real
single-node Slurm (scripts/start-slurm.sh) creates the study once, submits the `workers` worker jobs (one GPU each,
gpu partition) that all attach to it, then writes the report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_slurm import checkout_copy, scontrol_jobs, slurm  # noqa: F401 - the module's Slurm fixture

pytestmark = pytest.mark.slow


def test_tune_workers_through_slurm(slurm, tmp_path):  # noqa: F811
    repo = checkout_copy(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["detsim"]["samples"]["tracking"]["size"] = 3000
    tune = params["models"]["resolution"]["tune"]
    tune.pop("n_trials")  # a 1 s budget: each worker runs one trial (the one fake GPU serialises the jobs)
    tune.update({"timeout": 1, "workers": 2, "pruner": {"name": "none"},
                 "fixed": {"epochs": 1, "max_rows": 1000, "validation_rows": 300}})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    profile = yaml.safe_load((repo / "profiles/default/config.yaml").read_text())
    for res in profile["set-resources"].values():  # what a job asks must fit this machine's one node
        if "cpus_per_task" in res:
            res["cpus_per_task"] = 1
    (repo / "profiles/default/config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))

    snakemake = str(Path(sys.executable).with_name("snakemake"))
    env = {**slurm, "PYTHONPATH": str(repo / "src"), "FLASHSIM_MLFLOW": "off"}
    target = "results/tune/resolution/report.json"
    run = subprocess.run(
        [snakemake, "--profile", "gpu", "--jobs", "4", "--max-threads", "2", "--slurm-status-command", "squeue",
         "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2", target],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:]
    rep = json.loads((repo / target).read_text())
    assert rep["states"]["COMPLETE"] >= 2 and rep["states"]["RUNNING"] == 0
    assert {t["worker"] for t in rep["trials"]} == {"0", "1"}  # both batch jobs worked on the one study
    assert (repo / "results/tune/resolution/override.yaml").exists()

    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    records = [j for j in scontrol_jobs(env) if j.get("JobName") == run_id]
    by_rule: dict[str, list[dict]] = {}
    for rec in records:
        rule = re.match(r"rule_(tune_study|train_tune_torch|tune_report|generate|prepare)", rec["Comment"]).group(1)
        by_rule.setdefault(rule, []).append(rec)
        assert rec["JobState"] == "COMPLETED", rec
    assert len(by_rule["train_tune_torch"]) == 2 and len(by_rule["tune_study"]) == 1
    for rec in by_rule["train_tune_torch"]:
        assert rec["Partition"] == "gpu" and "gpu:1" in rec.get("TresPerJob", ""), rec
    for rec in by_rule["tune_study"] + by_rule["tune_report"]:
        assert rec["Partition"] == "cpu" and "gpu" not in rec.get("TresPerJob", ""), rec
