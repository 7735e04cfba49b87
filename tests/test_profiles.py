"""The Snakemake profiles cover every rule, and only torch training rules (train_*) ask for a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import workflow_copy

from flashsim.cluster import install_profiles, parse_dryrun, workflow_rules
from flashsim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_PROFILE = ROOT / "profiles" / "default" / "config.yaml"
GPU_PROFILE = ROOT / "profiles" / "gpu" / "config.yaml"


@pytest.fixture(scope="module")
def rules():
    return workflow_rules(ROOT)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Refuses duplicate mapping keys (plain YAML keeps the last one silently: a rule's entry would be lost)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {dupes}", node.start_mark)
        return super().construct_mapping(node, deep)


@pytest.fixture(scope="module")
def set_resources() -> dict[str, dict]:
    return yaml.load(WORKFLOW_PROFILE.read_text(), Loader=_UniqueKeyLoader).get("set-resources", {})


def snakemake(*args: str, cwd: Path = ROOT, env: dict | None = None) -> str:
    exe = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def gpu_count(resources: dict) -> int:
    gpu = int(resources.get("gpu", 0) or 0)
    return gpu + (1 if "gpu" in str(resources.get("gres", "")) else 0)


def test_every_rule_has_resources_in_the_workflow_profile(rules, set_resources):
    jobs = {r.name for r in rules if r.runs_command}
    missing = sorted(jobs - set(set_resources))
    assert not missing, f"rules without set-resources in {WORKFLOW_PROFILE.relative_to(ROOT)}: {missing}"
    stale = sorted(set(set_resources) - {r.name for r in rules})
    assert not stale, f"set-resources for rules that do not exist: {stale}"
    for name in jobs:
        res = set_resources[name]
        assert {"mem_mb", "runtime"} <= set(res), f"{name}: give mem_mb and runtime, got {sorted(res)}"


def test_only_torch_training_rules_ask_for_gpus(rules, set_resources):
    names = {r.name for r in rules}
    gpu_rules = {n for n, res in set_resources.items() if gpu_count(res) > 0}
    assert all(n.startswith("train_") for n in gpu_rules), f"GPU asked by non-training rules: {sorted(gpu_rules)}"
    # every training rule decides explicitly: gpu: 1 (torch) or gpu: 0 (LightGBM), so none is forgotten
    undecided = sorted(n for n in names if n.startswith("train_") and "gpu" not in set_resources.get(n, {}))
    assert not undecided, f"train_* rules must set `gpu: 1` (torch) or `gpu: 0` (LightGBM): {undecided}"


def test_gpu_profile_is_a_slurm_profile():
    prof = yaml.safe_load(GPU_PROFILE.read_text())
    assert prof["executor"] == "slurm"
    assert prof["retries"] >= 1 and prof["rerun-incomplete"] is True and prof["latency-wait"] >= 30
    partitions = yaml.safe_load((GPU_PROFILE.parent / prof["slurm-partition-config"]).read_text())["partitions"]
    assert any(p.get("max_gpu", 0) > 0 for p in partitions.values()), "no partition with GPUs"
    assert any(p.get("max_gpu", 0) == 0 for p in partitions.values()), "no CPU-only partition"
    assert (ROOT / "gpu").resolve() == GPU_PROFILE.parent.resolve(), "`gpu` in the root must link to profiles/gpu"


def test_dry_run_with_gpu_profile_shows_gpus_on_gpu_rules_only(set_resources, tmp_path):
    # typed as a user would, in the root of a copy of the workflow (the checkout may hold `make demo` outputs, which
    # would leave nothing to plan): the profile is found by name
    out = snakemake("--profile", "gpu", "-n", cwd=workflow_copy(tmp_path / "wf"))
    assert "Using profiles gpu and workflow specific profile profiles/default" in out
    jobs = parse_dryrun(out)
    assert jobs, out[-2000:]
    for job in jobs:
        if job.rule in ("all",) or not job.resources:
            continue
        want_gpu = gpu_count(set_resources.get(job.rule, {}))
        assert int(job.resources.get("gpu", 0)) == want_gpu, f"{job.rule}: {job.resources}"
        assert "gpu" not in job.resources.get("gres", ""), f"{job.rule}: {job.resources}"
        assert int(job.resources["mem_mb"]) > 0 and int(job.resources["runtime"]) > 0, f"{job.rule}: {job.resources}"


def test_install_profiles_links_and_snakemake_finds_it_by_name(tmp_path):
    dest = tmp_path / "config" / "snakemake"
    (link,) = install_profiles(ROOT, dest)
    assert link == dest / "gpu" and link.is_symlink() and link.resolve() == GPU_PROFILE.parent.resolve()
    assert install_profiles(ROOT, dest) == [link]  # idempotent

    # from another directory, `--profile gpu` resolves through $XDG_CONFIG_HOME/snakemake/gpu
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = snakemake("--profile", "gpu", "-n", "--snakefile", str(ROOT / "Snakefile"), "-d", str(ROOT),
                    "--quiet", "rules", cwd=tmp_path, env=env)
    assert "Using profiles gpu" in out

    other = tmp_path / "other"
    other.mkdir()
    link.unlink()
    link.symlink_to(other)
    with pytest.raises(ConfigError, match="--force"):
        install_profiles(ROOT, dest)
    install_profiles(ROOT, dest, force=True)
    assert link.resolve() == GPU_PROFILE.parent.resolve()

    link.unlink()
    link.mkdir()  # a user's own profile is never replaced
    with pytest.raises(ConfigError, match="not a link"):
        install_profiles(ROOT, dest, force=True)
    with pytest.raises(ConfigError, match="no profile nope"):
        install_profiles(ROOT, tmp_path / "x", ["nope"])


def test_install_profiles_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flashsim", "install-profiles", "--dest", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gpu").resolve() == GPU_PROFILE.parent.resolve()
    assert "snakemake --profile gpu" in proc.stdout
