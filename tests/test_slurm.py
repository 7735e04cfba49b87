"""A real single-node Slurm (scripts/start-slurm.sh) runs part of the workflow through `snakemake --profile gpu`;
Slurm's own job records show that every job went through it, GPU rules with the GPU gres in the gpu partition,
CPU rules without any GPU."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flashsim.cluster import parse_dryrun

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SIZE = 1500  # events/particles per generated sample: enough for every split, seconds per job
EPOCHS = 1  # of the one model trained


def checkout_copy(dest: Path) -> Path:
    """The working tree's tracked and new (not ignored) files, as a fresh checkout would have them."""
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def slurm():
    """The single-node Slurm of scripts/start-slurm.sh, reached through /etc/slurm/slurm.conf like a site's Slurm
    (the `srun` inside Snakemake's jobs ignores SLURM_CONF). Concurrent test runs share it: each holds a shared
    lock while it works; the run that started it stops it when no other run holds the lock."""
    if os.geteuid() != 0 or not shutil.which("slurmctld") or not shutil.which("munged"):
        pytest.skip("needs root and slurm-wlm + munge (scripts/setup-system.sh)")
    start_script = ROOT / "scripts" / "start-slurm.sh"
    conf = Path(subprocess.run([str(start_script), "--print-conf"], capture_output=True, text=True,
                               check=True).stdout.strip())
    system_conf = Path("/etc/slurm/slurm.conf")
    if system_conf.exists() and system_conf.resolve() != conf.resolve():
        pytest.skip(f"{system_conf} belongs to another Slurm installation: not touching it")
    conf.parent.mkdir(parents=True, exist_ok=True)
    with open(conf.parent / "users.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        start = subprocess.run([str(start_script)], capture_output=True, text=True)
        assert start.returncode == 0, start.stdout + start.stderr
        assert system_conf.resolve() == conf.resolve()
        try:
            yield {**os.environ, "SLURM_CONF": str(conf)}
        finally:
            if "already running" not in start.stdout:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # another test run is using it: it stays up
                else:
                    subprocess.run([str(ROOT / "scripts" / "stop-slurm.sh")], check=True)


def scontrol_jobs(env: dict) -> list[dict[str, str]]:
    out = subprocess.run(["scontrol", "show", "-o", "job"], env=env, capture_output=True, text=True).stdout
    return [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")]


def test_workflow_runs_through_slurm_with_gpus_for_gpu_rules_only(slurm, tmp_path):
    repo = checkout_copy(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for sample in params["detsim"]["samples"].values():
        sample["size"] = SAMPLE_SIZE
    for model in (params.get("models") or {}).values():
        if "epochs" in model:
            model["epochs"] = EPOCHS
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    profile = yaml.safe_load((repo / "profiles/default/config.yaml").read_text())
    resources = profile["set-resources"]
    for res in resources.values():  # what a job asks must fit this machine's one node
        if int(res.get("cpus_per_task", 0)) > os.cpu_count():
            res["cpus_per_task"] = os.cpu_count()
    (repo / "profiles/default/config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    gpu_rules = {rule for rule, res in resources.items() if int(res.get("gpu", 0) or 0) > 0}

    snakemake = str(Path(sys.executable).with_name("snakemake"))
    env = {**slurm, "PYTHONPATH": str(repo / "src"), "FLASHSIM_MLFLOW": "off"}

    # the subset: one GPU rule's job with what it needs (generate, prepare, ...) when the workflow has GPU rules,
    # else the generation and preparation of one sample
    plan = subprocess.run([snakemake, "-n"], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout
    jobs = parse_dryrun(plan)
    gpu_jobs = sorted((j for j in jobs if j.rule in gpu_rules), key=lambda j: (j.rule, j.output))
    prepare = min((j for j in jobs if j.rule == "prepare"), key=lambda j: j.output)
    targets = gpu_jobs[0].output if gpu_jobs else prepare.output
    planned = parse_dryrun(subprocess.run([snakemake, "-n", *targets], cwd=repo, env=env, capture_output=True,
                                          text=True, check=True).stdout)
    planned_rules = sorted(j.rule for j in planned if j.resources)

    run = subprocess.run(
        [snakemake, "--profile", "gpu", "--jobs", "4", "--max-threads", "2",
         # this test cluster has no accounting database: query job states with squeue
         "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
         "--slurm-keep-successful-logs", *targets],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:]
    assert all((repo / t).exists() for t in targets)
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)

    # what Slurm itself recorded for this run (finished jobs stay visible for MinJobAge)
    records = [j for j in scontrol_jobs(env) if j.get("JobName") == run_id]
    names = sorted(resources, key=len, reverse=True)
    seen = []
    for rec in records:
        rule = next(n for n in names if rec["Comment"] == f"rule_{n}" or rec["Comment"].startswith(f"rule_{n}_"))
        seen.append(rule)
        assert rec["JobState"] == "COMPLETED", rec
        want_mem = int(eval(str(resources[rule]["mem_mb"]), {"attempt": 1}))  # profile expressions, 1st attempt
        assert rec["MinMemoryNode"] == f"{want_mem}M", (rule, rec["MinMemoryNode"])
        if rule in gpu_rules:
            assert rec["Partition"] == "gpu" and "gpu:1" in rec.get("TresPerJob", ""), (rule, rec)
        else:
            assert rec["Partition"] == "cpu" and "gpu" not in rec.get("TresPerJob", ""), (rule, rec)
    assert sorted(seen) == planned_rules, f"Slurm saw {sorted(seen)}, the plan was {planned_rules}"
    assert "generate" in seen and "prepare" in seen
    assert bool(gpu_jobs) == any(r in gpu_rules for r in seen)
