"""Retries only where they help. Snakemake (``retries:``, profiles/gpu) resubmits a failed job whatever its exit
code; a bad input or configuration (exit 2) or a failed gate (exit 3) fails the same way every time.

Inside a workflow run (the rules' shell prefix sets ``FLASHSIM_FAILED_DIR``, the Snakefile's ``onstart`` empties
it), a ``flashsim`` command that exits 2 or 3 leaves a marker named after its command line; a resubmitted attempt of
the same command finds the marker and exits at once with the same code and message, without redoing the work.
Other failures (out of memory: SIGKILL 137, node failure, preemption, exit 1) leave no marker and are retried.
Outside a workflow (``FLASHSIM_FAILED_DIR`` unset) nothing is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ENV_DIR = "FLASHSIM_FAILED_DIR"
DETERMINISTIC = (2, 3)


def _marker(argv: list[str]) -> Path | None:
    top = os.environ.get(ENV_DIR, "").strip()
    if not top:
        return None
    key = hashlib.sha256(json.dumps([os.getcwd(), *argv]).encode()).hexdigest()[:20]
    return Path(top) / f"{(argv or ['flashsim'])[0]}-{key}.json"


def refused(argv: list[str]) -> tuple[int, str] | None:
    """(exit code, message) when this command already failed deterministically in this workflow run."""
    path = _marker(argv)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        data["refused"] = int(data.get("refused", 0)) + 1
        path.write_text(json.dumps(data))
        return int(data["code"]), str(data["message"])
    except (OSError, ValueError, KeyError):
        return None


def record(argv: list[str], code: int, message: str) -> None:
    """Remember a deterministic failure (exit 2 or 3) of this command for the rest of the workflow run."""
    path = _marker(argv)
    if path is None or code not in DETERMINISTIC:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"argv": argv, "code": code, "message": message, "refused": 0}))
    except OSError:
        pass
