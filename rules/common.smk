# Shared helpers for the rules: sample lists and the flashsim command line.
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


def model_prepared(name, splits):
    """Prepared Parquet files of the sample of model ``name`` (params.yaml models:) for ``splits``."""
    sample = config["models"][name]["sample"]
    return [f"{PREPARED}/{sample}/{split}.parquet" for split in splits]
