# Shared helpers for the rules: sample lists and the flashsim command line.
import glob
import shlex
from pathlib import Path

SCALE = config["scale"]
SAMPLES = list(config["detsim"]["samples"])
PREPARED = "results/prepared"
FLASHSIM = "flashsim"  # kept for rules written as `{FLASHSIM} verb`; new rules write `flashsim verb` directly


# Every job runs `flashsim` from THIS checkout, in whatever environment Snakemake activates for it (the venv, a
# conda env from envs/ with --software-deployment-method conda, a Slurm job): src/ goes first on PYTHONPATH and
# `flashsim` is a shell function around `python -m flashsim`, so no console script needs to be installed.
_SRC = shlex.quote(str(Path(workflow.basedir) / "src")).replace("{", "{{").replace("}", "}}")
shell.prefix(  # formatted per job like a shell command: literal braces are doubled
    "set -euo pipefail; "
    f"export PYTHONPATH={_SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    'flashsim() {{ python -m flashsim "$@"; }}; '
)


def scaled(value):
    """Resolve a {demo: x, full: y} params value for the configured scale."""
    if isinstance(value, dict) and SCALE in value:
        return value[SCALE]
    return value


def prepared_splits(name, splits):
    """Prepared Parquet files of the sample of model ``name`` (params.yaml models.NAME.sample)."""
    sample = config["models"][name]["sample"]
    return [f"{PREPARED}/{sample}/{split}.parquet" for split in splits]


def local_files(files):
    """Input files Snakemake can track (none when they are globs or root:// URLs)."""
    return [] if any(f.startswith("root://") or any(ch in f for ch in "*?[") for f in files) else files


def prepare_inputs(wc):
    """Local input files of a sample (globs expanded); root:// URLs are read by the job, not tracked here."""
    files = []
    for f in config["inputs"][wc.sample]["files"]:
        if "://" not in f:
            files += sorted(glob.glob(f, recursive=True)) if any(ch in f for ch in "*?[") else [f]
    return files


# ---- model rules: rerun triggers and MLflow job tags (flashsim.mlops.runs) ----
# Model rules declare `params: model=model_params(STAGE)` with STAGE one of train, export, validate: Snakemake's
# params rerun trigger then reruns exactly the jobs of a model whose params.yaml entry changed (train ignores the
# entry's validation-only keys), and the DVC wrapper stage sees params.yaml change. Their shell commands begin with
# `export FLASHSIM_SMK_RULE={rule} FLASHSIM_SMK_WILDCARDS='{wildcards}';`, which hands the rule name and the
# wildcards to the MLflow run as tags.
import json as _json
import sys as _sys

_sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from flashsim.models import expand as _expand_models

MODEL_CONFIGS = _expand_models(config.get("models", {}))  # NAME -> entry, species lists expanded
_VALIDATION_ONLY = {"gates", "validation_rows", "bins", "parity", "oracle"}


def model_params(stage="train"):
    """A params function: the model's entry (+ seed, scale) as canonical JSON, the keys that matter to ``stage``."""

    def get(wildcards):
        name = wildcards.get("name", wildcards.get("model"))
        entry = MODEL_CONFIGS[name]
        if stage == "train":
            entry = {k: v for k, v in entry.items() if k not in _VALIDATION_ONLY}
        elif stage == "export":
            entry = {k: v for k, v in entry.items() if k not in _VALIDATION_ONLY - {"parity"}}
        return _json.dumps({"model": entry, "seed": config["seed"], "scale": SCALE}, sort_keys=True)

    return get
