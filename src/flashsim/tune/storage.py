"""Where a study lives: an embedded journal file by default, SQLite, or a PostgreSQL server for a team.

``--storage`` (or ``FLASHSIM_TUNE_STORAGE``) takes:

* nothing: ``journal:results/tune/NAME/journal.log`` (Optuna's journal file; no set-up, safe for local processes);
* ``journal:PATH``: a journal file elsewhere (e.g. on a shared file system);
* ``sqlite:///PATH``: Optuna's RDB storage on SQLite (heartbeats; locks under many workers);
* ``postgresql://USER@HOST:PORT/DB`` (or ``postgresql+psycopg://``): a PostgreSQL server through psycopg 3. Leave
  the password out of the URL: libpq takes it from ``PGPASSWORD`` or ``~/.pgpass``. It is never logged
  (:func:`redact`).

RDB storages run heartbeats (``heartbeat_interval``): a trial whose worker died (SIGKILL, pre-emption) is failed
when another worker starts its next trial and re-queued with the same parameters
(``RetryHeartbeatStaleTrialCallback``).
The journal file has no heartbeat in Optuna 5: use an RDB storage where workers can be killed.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

ENV = "FLASHSIM_TUNE_STORAGE"
HEARTBEAT_ENV = "FLASHSIM_TUNE_HEARTBEAT"  # seconds between heartbeats (the grace period is 3 of them)
HEARTBEAT_INTERVAL = int(os.environ.get(HEARTBEAT_ENV, "10"))
GRACE_PERIOD = 3 * HEARTBEAT_INTERVAL  # a trial whose last heartbeat is older is failed (and retried)
MAX_RETRY = 2


def default_url(root: Path, name: str) -> str:
    return f"journal:{Path(root) / 'results' / 'tune' / name / 'journal.log'}"


def resolve_url(url: str | None, root: Path, name: str) -> str:
    """The storage URL: ``url``, else ``$FLASHSIM_TUNE_STORAGE``, else the model's journal file."""
    url = url or os.environ.get(ENV) or default_url(root, name)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def redact(url: str, root: Path | None = None) -> str:
    """``url`` without its password (for logs, reports, MLflow and override files); a journal file inside
    ``root`` as a relative path."""
    if root is not None and url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        if path.is_relative_to(root):
            return f"journal:{path.relative_to(root)}"
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def is_rdb(url: str) -> bool:
    return url.startswith(("sqlite:", "postgresql", "mysql"))


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
                 max_retry: int = MAX_RETRY) -> Any:
    """An Optuna storage for ``url`` (see the module docstring)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if is_rdb(url):
        kwargs: dict[str, Any] = {"pool_pre_ping": True} if url.startswith("postgresql") else {}
        with warnings.catch_warnings():  # the retry callback is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
            heartbeat_stale_trial_callback=retry)
    from flashsim.errors import ConfigError

    raise ConfigError(f"tune storage {redact(url)!r}: expected journal:PATH, sqlite:///PATH or "
                      "postgresql://USER@HOST:PORT/DB")
