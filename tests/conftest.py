"""Shared fixtures: the repository root and the real servers (servers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import xrootd  # noqa: F401 - session fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return ROOT
