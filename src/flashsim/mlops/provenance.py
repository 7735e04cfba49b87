"""Provenance facts, each computed in one place: git state of the code, interpreter and package versions, file
hashes and where a job ran. Standard library only, so that any module (the CLI, the bench, the exporter) may
import it cheaply."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
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


PATCH_CAP = 1 << 20
"""Largest ``git.patch`` recorded (bytes); a longer patch is cut there and the cut recorded (``patch_truncated``)."""
UNTRACKED_CAP = 1000
"""At most this many untracked files are listed (the rest are counted)."""


def git_state(root: Path | None = None, cap: int = PATCH_CAP) -> dict[str, Any]:
    """Commit, dirty flag, the patch of TRACKED changes (``git diff HEAD``, cut at ``cap`` bytes; the cut recorded in
    ``patch_bytes``/``patch_truncated``) and the untracked, not ignored files by name, size and sha256: never their
    content (a ``.env`` with a password, a Parquet file must not reach MLflow)."""
    root = root or code_root()
    sha = git_commit(root)
    if not sha:
        return {"sha": "unknown", "dirty": True, "patch": "", "untracked": [], "patch_bytes": 0,
                "patch_truncated": False}
    patch = git(root, "diff", "HEAD", "--binary") or ""
    size = len(patch.encode())
    if size > cap:
        patch = patch.encode()[:cap].decode(errors="ignore") + f"\n# flashsim: patch cut at {cap} of {size} bytes\n"
    names = [f for f in (git(root, "ls-files", "--others", "--exclude-standard", "-z") or "").split("\0") if f]
    untracked = []
    for name in names[:UNTRACKED_CAP]:
        path = root / name
        entry: dict[str, Any] = {"path": name}
        with contextlib.suppress(OSError):
            entry["size"] = path.stat().st_size
            entry["sha256"] = file_sha256(path)
        untracked.append(entry)
    return {"sha": sha, "dirty": bool(patch.strip() or names), "patch": patch, "patch_bytes": size,
            "patch_truncated": size > cap, "untracked": untracked, "untracked_count": len(names),
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
    tags["command"] = redact(" ".join(["flashsim", *sys.argv[1:]]) if sys.argv else f"flashsim {kind}")
    return tags


# ------------------------------------------------------------------------------------------------ redaction
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*(?:token|password|passwd|pwd|secret|key|auth|"
                           r"signature|credential|sig))=)[^&#\s'\"]+", re.IGNORECASE)
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` with credentials in URIs replaced by ``***``: userinfo (``http://user:pw@host`` ->
    ``http://***@host``) and secret-looking query parameters (``?token=``, ``&password=``, ``X-Amz-Signature=``...)."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", text)


def redact_tree(obj: Any) -> Any:
    """:func:`redact` applied to every string in a nested dict/list (keys included)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact(str(k)) if isinstance(k, str) else k: redact_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_tree(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that redacts credentials in URIs from every record it sees (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):
            msg = record.getMessage()
            clean = redact(msg)
            if clean != msg:
                record.msg, record.args = clean, None
        return True


def install_log_redaction() -> None:
    """Redact credentials from the records of every handler of the root logger and of MLflow's logger."""
    for name in (None, "mlflow"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
