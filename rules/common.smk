# Shared helpers for the rules: sample lists and the flashsim command line.
import glob
import shlex
import shutil
from pathlib import Path

SCALE = config["scale"]
SAMPLES = list(config["detsim"]["samples"])
PREPARED = "results/prepared"


# Every job runs `flashsim` from THIS checkout, in whatever environment Snakemake activates for it (the venv, a
# conda env from envs/ with --software-deployment-method conda, a Slurm job): src/ goes first on PYTHONPATH and
# `flashsim` is a shell function around `python -m flashsim`, so no console script needs to be installed.
_SRC = shlex.quote(str(Path(workflow.basedir) / "src")).replace("{", "{{").replace("}", "}}")
FAILED_DIR = Path(".snakemake") / "flashsim-failed"  # markers of exit 2/3 failures in this run (flashsim.retry)
_FAILED = shlex.quote(str(FAILED_DIR.resolve())).replace("{", "{{").replace("}", "}}")


onstart:
    shutil.rmtree(FAILED_DIR, ignore_errors=True)  # a new workflow run tries every job again
shell.prefix(  # formatted per job like a shell command: literal braces are doubled
    "set -euo pipefail; "
    f"export PYTHONPATH={_SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f"export FLASHSIM_FAILED_DIR={_FAILED}; "  # deterministic failures are not retried (flashsim.retry)
    'flashsim() {{ python -m flashsim "$@"; }}; '
)


def scaled(value):
    """Resolve a {demo: x, full: y} params value for the configured scale."""
    if isinstance(value, dict) and SCALE in value:
        return value[SCALE]
    return value


def prepared_splits(name, splits):
    """Prepared Parquet files of the sample of model ``name`` (params.yaml models.NAME.sample)."""
    sample = MODEL_CONFIGS[name]["sample"]
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


# ---- model rules: rerun triggers, threads and MLflow job tags ----
# Model rules declare `params: model=model_params(STAGE)` with STAGE one of train, export, validate: Snakemake's
# params rerun trigger then reruns exactly the jobs of a model whose params.yaml entry changed (train ignores the
# entry's validation-only keys; flashsim.models.stage_params), and the DVC wrapper stage sees params.yaml change.
# `threads: model_threads` gives a job its model's `threads` (docs/models.md, "Threads"). MODEL_JOB exports the
# rule name and wildcards (tags of the MLflow run) and the granted threads, then runs `flashsim VERB NAME`.
import os as _os
import sys as _sys

_sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from flashsim.models import by_training, expand_params, stage_params

MODEL_CONFIGS = expand_params(config)  # NAME -> entry: species expanded, feature sets resolved
BY_TRAINING = by_training(MODEL_CONFIGS)  # torch | cpu | assemble -> names (flashsim.models.FAMILIES `trains`)
MODEL_JOB = ("export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}' FLASHSIM_THREADS={threads}; "
             "flashsim {params.verb} {wildcards.name} > {log} 2>&1")


def model_params(stage="train"):
    """A params function: the model's entry (+ seed, scale) as canonical JSON, the keys that matter to ``stage``."""
    return lambda wc: stage_params(MODEL_CONFIGS[wc.name], stage, config["seed"], SCALE, config.get("detector"))


def model_threads(wc):
    """The model's `threads` at this scale; 0 (all cores) asks for every core, which Snakemake caps to --cores."""
    return scaled(MODEL_CONFIGS[wc.name].get("threads", 0)) or _os.cpu_count() or 1


def one_of(names):
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(names) or "^$"


def tune_workers(wc):
    """The done-markers of the worker jobs of model NAME's study (its `tune.workers`; rules/tune.smk)."""
    return [f"results/tune/{wc.name}/workers/{i}.done"
            for i in range(int(scaled(MODEL_CONFIGS[wc.name]["tune"].get("workers", 1))))]
