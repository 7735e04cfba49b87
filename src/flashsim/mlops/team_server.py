"""Helpers of ``scripts/start-mlflow.sh``, the team's authenticated MLflow server (MLflow's ``basic-auth`` app).

    python -m flashsim.mlops.team_server wait URL          # until URL/health answers (300 s)
    python -m flashsim.mlops.team_server users URL FILE    # one account per "USER PASSWORD" line of FILE

``users`` runs as the admin (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``); an existing user gets the
password of the file. Users own (MANAGE) the experiments they create; on others they have the server's
``default_permission`` (READ in start-mlflow.sh): :func:`grant` gives one user a permission on one experiment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flashsim.errors import ConfigError
from flashsim.mlops.provenance import redact


def wait(url: str, timeout: float = 300.0) -> None:
    """Return when ``url``/health answers 200; ConfigError after ``timeout`` seconds."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url.rstrip("/") + "/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise ConfigError(f"MLflow server {redact(url)} did not answer /health within {timeout:.0f} s")


def read_users(path: str | Path) -> dict[str, str]:
    """``USER PASSWORD`` lines (``#`` comments and blank lines skipped) -> {user: password}."""
    users: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 12:
            raise ConfigError(f"{path}:{n}: expected 'USER PASSWORD' with a password of >= 12 characters")
        users[parts[0]] = parts[1]
    return users


def add_users(url: str, users: dict[str, str]) -> None:
    """Create each user (or set its password) on the server at ``url``, as the admin of the environment."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=url)
    for user, password in users.items():
        try:
            client.create_user(user, password)
        except MlflowException as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                raise
            client.update_user_password(user, password)


def grant(url: str, experiment_id: str, user: str, permission: str = "EDIT") -> None:
    """Give ``user`` ``permission`` (READ, EDIT, MANAGE, NO_PERMISSIONS) on one experiment (as the admin)."""
    from mlflow.server import get_app_client

    get_app_client("basic-auth", tracking_uri=url).grant_user_permission(user, "experiment", experiment_id, permission)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["wait"] and len(argv) == 2:
            wait(argv[1])
        elif argv[:1] == ["users"] and len(argv) == 3:
            add_users(argv[1], read_users(argv[2]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except ConfigError as err:
        print(f"team_server: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
