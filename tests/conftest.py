"""Shared fixtures: the repository root, MLflow switched off by default, and the real servers (servers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import mlflow_store_template, mlflow_tracking_server, s3, team_mlflow, xrootd  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _no_mlflow_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``flashsim train/export/validate`` record MLflow runs; tests opt in (tests/test_mlops_*.py) so that
    other tests neither pay for a store nor write one into the repository."""
    monkeypatch.setenv("FLASHSIM_MLFLOW", "off")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def runtime_toy_models(tmp_path_factory) -> Path:
    """The toy chain of flashsim.runtime.toys (trained once per session), with the real models' names and IO."""
    from flashsim.runtime import toys

    return toys.build(tmp_path_factory.mktemp("runtime_toys"), n=3000, steps=40, width=32)
