"""Retries only where they help: in a workflow run (the real rules/common.smk: shell prefix + onstart), a flashsim
command failing with exit 2 (bad input/config) or 3 (gate) is not redone by Snakemake's resubmissions, while a
job killed like an out-of-memory job (SIGKILL) is retried in full."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flashsim import retry

ROOT = Path(__file__).resolve().parents[1]

SNAKEFILE = '''
configfile: "params.yaml"
include: "rules/common.smk"

rule all:
    input: "bad.txt", "oom.txt"

rule bad:
    output: "bad.txt"
    retries: 2
    shell: "echo attempt >> bad.attempts; flashsim train efficiency --params missing.yaml"

rule oom:
    output: "oom.txt"
    retries: 2
    shell: "echo attempt >> oom.attempts; python -c 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'"
'''


def test_record_only_deterministic_codes(tmp_path, monkeypatch):
    monkeypatch.setenv(retry.ENV_DIR, str(tmp_path))
    retry.record(["train", "x"], 1, "crash")
    retry.record(["train", "x"], 137, "killed")
    assert retry.refused(["train", "x"]) is None
    retry.record(["train", "x"], 3, "gate failed")
    assert retry.refused(["train", "x"]) == (3, "gate failed")
    assert retry.refused(["train", "y"]) is None
    monkeypatch.delenv(retry.ENV_DIR)
    assert retry.refused(["train", "x"]) is None  # outside a workflow run nothing is recorded


@pytest.mark.slow
def test_workflow_resubmits_but_never_redoes_a_deterministic_failure(tmp_path):
    wf = tmp_path / "wf"
    wf.mkdir()
    shutil.copy2(ROOT / "params.yaml", wf)
    for name in ("rules", "schemas"):
        shutil.copytree(ROOT / name, wf / name)
    (wf / "src").symlink_to(ROOT / "src")
    (wf / "Snakefile").write_text(SNAKEFILE)
    exe = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(exe), "--cores", "1", "--keep-going"], cwd=wf, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0
    assert len((wf / "bad.attempts").read_text().split()) == 3  # Snakemake resubmitted it twice ...
    (marker,) = (wf / ".snakemake" / "flashsim-failed").glob("train-*.json")
    data = json.loads(marker.read_text())
    assert data["code"] == 2 and "missing.yaml" in data["message"]
    assert data["refused"] == 2  # ... and both resubmissions exited at once, with the same code and message
    assert len((wf / "oom.attempts").read_text().split()) == 3  # a SIGKILLed job is retried in full
    # a new workflow run tries again (onstart empties the markers)
    subprocess.run([str(exe), "--cores", "1", "bad.txt"], cwd=wf, capture_output=True, text=True, timeout=600)
    assert len((wf / "bad.attempts").read_text().split()) == 6
    assert json.loads(marker.read_text())["refused"] == 2  # not 5: the first attempt of the new run did the work
