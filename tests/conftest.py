"""Shared fixtures: the repository root, MLflow switched off by default, and the real servers (servers.py)."""

from __future__ import annotations

from pathlib import Path

import faults
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


# ---- the fault campaign (tests/faults.py): mark its cases, record what each left behind, write the summary
_FAULTS: list[dict] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "fault: a case of the fault campaign (tests/faults.py)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if faults.case_of(item.nodeid) is not None:
            item.add_marker(pytest.mark.fault)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    case = faults.case_of(item.nodeid)
    if case is None or not (rep.when == "call" or (rep.when == "setup" and not rep.passed)):
        return
    tmp = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob(".*.tmp")) if tmp and tmp.exists() else []
    _FAULTS.append({"case": case[0], "issue": case[1], "test": item.nodeid, "outcome": rep.outcome,
                    "passed": rep.passed, "temporaries_left": left,
                    **{k: v for k, v in item.user_properties}})


def pytest_sessionfinish(session, exitstatus):
    import json
    import os

    target = os.environ.get("FLASHSIM_FAULTS_REPORT")
    if not target or not _FAULTS:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    listed = sorted({c for c, _ in faults.CASES.values()})
    tried = sorted({f["case"] for f in _FAULTS})
    path.write_text(json.dumps({
        "cases_listed": len(listed), "cases_tried": len(tried),
        "cases_passed": len({f["case"] for f in _FAULTS} - {f["case"] for f in _FAULTS if not f["passed"]}),
        "not_tried": sorted(set(listed) - set(tried)),
        "temporaries_left": sorted({t for f in _FAULTS for t in f["temporaries_left"]}),
        "secrets_found": sorted({s for f in _FAULTS for s in f.get("secrets_found", [])}),
        "runs": _FAULTS}, indent=2) + "\n")
