"""Model rules are chosen by family: a new params.yaml entry of an existing family gets its train, export and
validate jobs with no rule written for it (rules/models.smk, flashsim.models.FAMILIES ``trains``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from flashsim.cluster import parse_dryrun
from flashsim.models import FAMILIES, TRAINS

ROOT = Path(__file__).resolve().parents[1]


def project_copy(dest: Path) -> Path:
    """The workflow files of this checkout in ``dest`` (src linked, not copied): a dry run writes nothing here."""
    for name in ("Snakefile", "params.yaml"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("rules", "schemas", "profiles", "envs"):
        shutil.copytree(ROOT / name, dest / name)
    (dest / "src").symlink_to(ROOT / "src")
    return dest


def dry_run(root: Path, *targets: str) -> str:
    exe = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(exe), "-n", "--cores", "2", *targets], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_families_say_how_they_train():
    assert {f.trains for f in FAMILIES.values()} <= set(TRAINS)
    assert all(f.module.startswith("flashsim.models.") for f in FAMILIES.values())


def test_new_entry_of_an_existing_family_gets_its_jobs(tmp_path):
    root = project_copy(tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    models = params["models"]
    models["resolution_wide"] = {**models["resolution"], "width": 256}  # a second `generator`
    models["acceptance_deep"] = {**models["acceptance"], "num_leaves": 64}  # a second `lgbm_classifier`
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    jobs = parse_dryrun(dry_run(root))
    planned = {(j.rule, o.strip()) for j in jobs for o in j.output}
    for name, train_rule in (("resolution_wide", "train_torch"), ("acceptance_deep", "fit_cpu")):
        assert (train_rule, f"results/train/{name}/trained.json") in planned, name
        assert ("export", f"models/{name}.onnx") in planned, name
        assert ("validate", f"reports/{name}/index.html") in planned, name
    # the new models are part of `all` and of the DVC summary, and the checkout's own models are all still there
    expected = {f"reports/{n}/index.html" for n in ("resolution_wide", "acceptance_deep", "resolution", "acceptance")}
    assert expected <= {o for rule, o in planned if rule == "validate"}


def test_jobs_get_their_models_threads(tmp_path):
    """Demo: one thread per model job (granted to the job as FLASHSIM_THREADS); full: `threads: 0`, every core."""
    root = project_copy(tmp_path)
    for scale, want in (("demo", 1), ("full", 2)):
        out = dry_run(root, "-p", "--config", f"scale={scale}", "--", "models/ghost_mlp.onnx", "models/acceptance.onnx")
        cmds = [line for line in out.splitlines() if "flashsim train" in line or "flashsim export" in line]
        assert len(cmds) == 4, out[-3000:]
        assert all(f"FLASHSIM_THREADS={want};" in c for c in cmds), (scale, cmds)
