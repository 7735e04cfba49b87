"""Configuration errors surface before any job: `snakemake -n` on a copy of the workflow fails at once, exit 2, with
the same one-line message as `flashsim train` (the whole params.yaml and every model's family schema are checked
when the Snakefile loads, without importing torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import workflow_copy

from flashsim.errors import ConfigError
from flashsim.models import FAMILIES
from flashsim.models import schemas as family_schemas

ROOT = Path(__file__).resolve().parents[1]
KNOWN = ", ".join(sorted(FAMILIES))
CASES = {
    "unknown top-level key": ({"prepar": {}}, "params.yaml: <top>: Additional properties are not allowed ('prepar' "
                                              "was unexpected)"),
    "epochs not a number": ({"models": {"efficiency": {"epochs": "ten"}}},
                            "params.yaml: models/efficiency/epochs: 'ten' is not of type 'integer'"),
    "negative lr": ({"models": {"efficiency": {"lr": -0.1}}},
                    "params.yaml: models/efficiency/lr: -0.1 is less than or equal to the minimum of 0"),
    "unknown family": ({"models": {"efficiency": {"family": "mlp_clasifier"}}},
                       f"params.yaml: models/efficiency/family: unknown model family 'mlp_clasifier'; known families: "
                       f"{KNOWN}"),
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and v else v
    return out


def broken_workflow(dest: Path, change: dict) -> Path:
    wf = workflow_copy(dest)
    params = yaml.safe_load((wf / "params.yaml").read_text())
    (wf / "params.yaml").write_text(yaml.safe_dump(_merge(params, change), sort_keys=False))
    return wf


def test_family_schemas_data_matches_the_classes():
    """family_schemas.json (read by the Snakefile) is what the Family classes validate (regenerate it with
    `python -m flashsim.models.schemas --write`)."""
    assert family_schemas.load() == family_schemas.build()


def test_check_config_accepts_the_repository_params_without_torch():
    code = ("import sys, yaml; from flashsim.models.schemas import check_config; "
            "check_config(yaml.safe_load(open('params.yaml'))); assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("case", list(CASES))
def test_check_config_names_the_key(case):
    change, message = CASES[case]
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), change)
    with pytest.raises(ConfigError) as err:
        family_schemas.check_config(params, ROOT / "schemas" / "params.schema.yaml")
    assert str(err.value) == message


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown top-level key", "epochs not a number", "unknown family"])
def test_dry_run_fails_at_once_with_the_cli_message(tmp_path, case):
    change, message = CASES[case]
    wf = broken_workflow(tmp_path / "wf", change)
    exe = Path(sys.executable).with_name("snakemake")
    dry = subprocess.run([str(exe), "-n", "--cores", "1"], cwd=wf, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 2, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert f"flashsim: error: {message}\n" in dry.stderr
    assert "Traceback" not in dry.stderr and "MissingRule" not in dry.stderr + dry.stdout
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cli = subprocess.run([sys.executable, "-m", "flashsim", "train", "efficiency"], cwd=wf, capture_output=True,
                         text=True, env=env, timeout=300)
    assert cli.returncode == 2 and cli.stderr.strip().splitlines()[-1] == f"flashsim train: error: {message}"
    assert not (wf / "results").exists() and not (wf / "logs").exists()  # nothing ran
