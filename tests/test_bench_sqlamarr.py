"""`flashsim bench sqlamarr --quick`: both runtimes simulate the same particles on one core; JSON to --out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flashsim.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_sqlamarr_quick(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "reports" / "bench" / "sqlamarr.json"
    assert main(["bench", "sqlamarr", "--quick", "--params", "params.yaml", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["target"] == "sqlamarr" and r["quick"] and r["cpus"] is not None and len(r["cpus"]) == 1
    assert r["particles"] == r["sqlamarr"]["particles"] == 2000  # the same particles in both runtimes
    assert r["stages"] == ["acceptance", "resolution"]
    for side in ("sqlamarr", "onnxruntime"):
        assert r[side]["particles_per_s"] > 0
    assert r["ratio_onnxruntime_over_sqlamarr"] == pytest.approx(
        r["onnxruntime"]["particles_per_s"] / r["sqlamarr"]["particles_per_s"])
