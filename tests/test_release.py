"""`flashsim release`: the versioned bundle (ONNX, shared objects, cards, SQLamarr pipeline, checksums) and its
changelog of validation metrics against the previous bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile

import pytest

from flashsim.cli import main
from flashsim.release import build_bundle, platform_tag
from flashsim.runtime import export_c


def release_models(src, dest):
    """Two toy models (a tree classifier and a generator) with their parity-gated shared objects."""
    dest.mkdir(parents=True)
    for name in ("acceptance", "resolution"):
        for suffix in (".onnx", ".json"):
            shutil.copy2(src / f"{name}{suffix}", dest / f"{name}{suffix}")
    cwd = os.getcwd()
    os.chdir(dest.parent)
    try:
        for name in ("acceptance", "resolution"):
            export_c.build_checked(name, dest, rows=200)
    finally:
        os.chdir(cwd)
    return dest


@pytest.fixture(scope="module")
def models(runtime_toy_models, tmp_path_factory):
    return release_models(runtime_toy_models, tmp_path_factory.mktemp("release") / "models")


def _reports(root, auc):
    (root / "acceptance").mkdir(parents=True, exist_ok=True)
    (root / "acceptance" / "metrics.json").write_text(json.dumps({"auc": auc, "ks": {"p": 0.02}}))
    return root


def test_bundle_holds_models_checksums_and_changelog(models, tmp_path):
    v1 = build_bundle("v1.0.0", models, _reports(tmp_path / "r1", 0.60), tmp_path / "dist")
    v2 = build_bundle("v1.1.0", models, _reports(tmp_path / "r2", 0.55), tmp_path / "dist", previous=v1)
    name = f"flashsim-models-v1.1.0-{platform_tag()}"
    assert v2.name == f"{name}.tar.gz"
    with tarfile.open(v2) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    root = tmp_path / "x" / name
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {"models/acceptance.onnx", "models/acceptance.json", "models/acceptance.so", "models/resolution.so",
            "models/resolution.so.json", "models/sqlamarr_pipeline.json", "metrics.json", "CHANGELOG.md",
            "SHA256SUMS", "MANIFEST.json"} <= files
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=root, check=True)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["previous"] == "v1.0.0" and manifest["models"] == ["acceptance", "resolution"]
    steps = json.loads((root / "models" / "sqlamarr_pipeline.json").read_text())["steps"]
    assert {s.get("kind") for s in steps if s.get("model") == "resolution"} == {"GenerativePlugin"}
    log = (root / "CHANGELOG.md").read_text()
    assert "against v1.0.0" in log and "| acceptance | auc | 0.6 | 0.55 | -0.05 |" in log
    assert "| acceptance | ks.p | 0.02 | 0.02 | +0 |" in log


def test_stale_shared_object_is_an_error(models, tmp_path, capsys):
    work = tmp_path / "models"
    shutil.copytree(models, work)
    os.utime(work / "resolution.onnx")  # newer than its .so
    (work / "acceptance.so").unlink()
    capsys.readouterr()
    assert main(["release", "--version", "v2", "--models", str(work), "--out", str(tmp_path / "dist")]) == 2
    err = capsys.readouterr().err
    assert "acceptance" in err and "resolution" in err and not (tmp_path / "dist").exists()
