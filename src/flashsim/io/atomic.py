"""Atomic outputs: write to a temporary sibling, rename into place only when everything succeeded.

Temporary siblings are named ``.<name>.<pid>.<random>.tmp`` (git and DVC ignore ``.*.tmp``): an error, Ctrl-C or
SIGTERM (:func:`install_signal_handlers`) removes them; after a SIGKILL the next writer of the same output removes
those whose process is gone. :func:`folder_lock` keeps two jobs from writing one output folder at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from flashsim.errors import FlashsimError

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".flashsim.lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove temporary siblings of ``path`` left by a killed writer (its pid gone); returns what was removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*{TMP_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink() if tmp.is_file() or tmp.is_symlink() else _rmtree(tmp)
                removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; on success rename them all into place, on error remove them."""
    finals = [Path(p) for p in paths]
    tmps = [_tmp_sibling(p) for p in finals]
    try:
        yield tmps
    except BaseException:
        for t in tmps:
            t.unlink(missing_ok=True)
        raise
    for t, f in zip(tmps, finals, strict=True):
        os.replace(t, f)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Single-file form of :func:`atomic_outputs`."""
    with atomic_outputs([path]) as (tmp,):
        yield tmp


def write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# ------------------------------------------------------------------------------------------------ kills and locks
class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM/SIGHUP (Slurm's ``scancel``, Snakemake's cancel): like Ctrl-C, it
    unwinds every ``with`` block, so temporary outputs are removed and the MLflow run ends KILLED."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def install_signal_handlers() -> dict[int, Any]:
    """SIGTERM and SIGHUP raise :class:`Terminated`; SIGINT raises KeyboardInterrupt (Python's default). Returns
    the previous handlers (for :func:`restore_signal_handlers`); a no-op outside the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)


class FolderBusyError(FlashsimError):
    """Another process holds the output folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "job") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (file ``.flashsim.lock`` inside) or refuse at once with
    :class:`FolderBusyError` naming the holder. The kernel releases it when the process dies, even by SIGKILL."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise FolderBusyError(f"{folder} is in use by {holder}: another {what} is writing it; wait for it to "
                                  f"end (or stop it) before starting this one") from err
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        fh.flush()
        yield path
    finally:
        fh.close()
