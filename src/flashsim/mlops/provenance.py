"""Provenance facts, each computed in one place: git state of the code, interpreter and package versions, file
hashes and where a job ran. Standard library only, so that any module (the CLI, the bench, the exporter) may
import it cheaply."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("flashsim", "numpy", "torch", "torch-geometric", "lightgbm", "scikit-learn", "onnx", "onnxruntime",
            "onnxmltools", "pyarrow", "uproot", "awkward", "mlflow", "snakemake", "dvc")
"""The packages that decide the bytes of a model (their versions are recorded with every MLflow job)."""
ENV_RULE, ENV_WILDCARDS = "FLASHSIM_SMK_RULE", "FLASHSIM_SMK_WILDCARDS"
"""Set by the Snakemake rules (``rules/common.smk``) to name the job."""


def git(root: Path, *args: str) -> str | None:
    """stdout of ``git -C root ARGS``; None when git fails or is missing."""
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode(errors="replace")


def code_root(root: Path | None = None) -> Path:
    """The git work tree holding the running flashsim code (a source checkout), else ``root`` (default: the
    project root)."""
    src = Path(__file__).resolve().parents[2]
    top = (git(src, "rev-parse", "--show-toplevel") or "").strip()
    if top and (Path(top) / "src" / "flashsim").is_dir():
        return Path(top)
    if root is not None:
        return root
    from flashsim.config import repo_root

    return repo_root()


def git_commit(root: Path | None = None) -> str:
    """The commit checked out in ``root`` (default: :func:`code_root`); empty when unknown."""
    return (git(root or code_root(), "rev-parse", "HEAD") or "").strip()


def git_state(root: Path | None = None) -> dict[str, Any]:
    """Commit, dirty flag and a patch (tracked changes + untracked files) that rebuilds the working tree."""
    root = root or code_root()
    sha = git_commit(root)
    if not sha:
        return {"sha": "unknown", "dirty": True, "patch": ""}
    patch = git(root, "diff", "HEAD", "--binary") or ""
    untracked = [f for f in (git(root, "ls-files", "--others", "--exclude-standard", "-z") or "").split("\0") if f]
    for name in untracked:
        path = root / name
        if path.is_file() and path.stat().st_size <= 1 << 20:
            try:
                out = subprocess.run(["git", "-C", str(root), "diff", "--no-index", "--binary", "/dev/null", name],
                                     capture_output=True, timeout=30)
                patch += out.stdout.decode(errors="replace")
            except (OSError, subprocess.SubprocessError):
                pass
    return {"sha": sha, "dirty": bool(patch.strip() or untracked), "patch": patch, "untracked": untracked,
            "root": str(root)}


def file_sha256(paths: str | Path | Sequence[str | Path], chunk: int = 1 << 22) -> str:
    """sha256 (hex) over the bytes of one file, or of several files read in order."""
    h = hashlib.sha256()
    for path in [paths] if isinstance(paths, str | Path) else paths:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def environment(packages: Sequence[str] = PACKAGES, *, machine: bool = False) -> dict[str, Any]:
    """The interpreter and the installed versions of ``packages`` (missing ones left out), plus either

    * ``machine=False``: ``platform`` and ``machine`` (what decides the bytes of a model; MLflow's
      ``provenance/<job>/environment.json``), or
    * ``machine=True``: where a figure was measured: ``host``, ``cpu_model``, ``cpu_count``, ``load_average`` and
      ``git_commit`` of the code (the ``environment`` of benchmark JSON).
    """
    env: dict[str, Any] = {"python": platform.python_version()}
    if machine:
        env.update({"host": platform.node(), "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "git_commit": git_commit()})
    else:
        env.update({"platform": platform.platform(), "machine": platform.machine()})
    for pkg in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[pkg] = metadata.version(pkg)
    return env


def job_tags(kind: str, device: str | None = None) -> dict[str, str]:
    """Where this job ran: host, device, Slurm job and Snakemake rule/wildcards (from the environment)."""
    tags = {"host": socket.gethostname()}
    if device:
        tags["device"] = device
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm.job_id"] = os.environ["SLURM_JOB_ID"]
    if os.environ.get(ENV_RULE):
        tags["snakemake.rule"] = os.environ[ENV_RULE]
        tags["snakemake.wildcards"] = os.environ.get(ENV_WILDCARDS, "")
    tags["command"] = " ".join(["flashsim", *sys.argv[1:]]) if sys.argv else f"flashsim {kind}"
    return tags
