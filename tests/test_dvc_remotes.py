"""DVC remotes on EOS-like storage: push -> delete cache and workspace copies -> pull -> byte-identical data and
models, for a directory remote (EOS FUSE mount), WebDAV through a real XRootD server's HTTP interface (EOS's
HTTPS route) and S3 through a real moto server. Credentials go to .dvc/config.local only."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dvc's own pygtrie use


def dvc(repo: Path, *args: str) -> str:
    """The real `dvc` command line, run in ``repo`` (in-process: saves an interpreter start per call)."""
    import contextlib
    import io
    import os

    from dvc.cli import main

    out, cwd = io.StringIO(), os.getcwd()
    os.chdir(repo)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(list(args))
    finally:
        os.chdir(cwd)
    assert code == 0, f"dvc {' '.join(args)} failed:\n{out.getvalue()}"
    return out.getvalue()


def digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


MAKE_MODELS = textwrap.dedent('''
    """Writes two small ONNX models + cards (stands in for the snakemake wrapper stage)."""
    import json, pathlib
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    out = pathlib.Path("models"); out.mkdir(exist_ok=True)
    for i, name in enumerate(["acceptance", "efficiency"]):
        w = numpy_helper.from_array(np.random.default_rng(i).normal(size=(4, 1)).astype("f4"), "w")
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], name,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        (out / f"{name}.onnx").write_bytes(m.SerializeToString())
        (out / f"{name}.json").write_text(json.dumps({"name": name}))
''')


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A scratch repository with the project's DVC config: raw ROOT data (`dvc add`) and a stage making models."""
    import uproot

    path = tmp_path_factory.mktemp("dvcrepo")
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    dvc(path, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", path / ".dvc" / "config")
    shutil.copy(ROOT / ".dvcignore", path / ".dvcignore")
    (path / "data" / "raw").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for sample in ("tracking", "ghost"):
        with uproot.recreate(path / "data" / "raw" / f"{sample}.root") as f:
            f["Tracks"] = {"p": rng.exponential(5e3, 20000).astype("f4"), "eta": rng.uniform(2, 5, 20000)}
    dvc(path, "add", "-q", "data/raw/tracking.root", "data/raw/ghost.root")
    (path / "make_models.py").write_text(MAKE_MODELS)
    (path / "dvc.yaml").write_text(f"stages:\n  models:\n    cmd: {sys.executable} make_models.py\n"
                                   "    deps: [make_models.py]\n    outs: [models]\n")
    dvc(path, "repro", "-q")
    return path


def files(repo: Path) -> list[Path]:
    return sorted([*(repo / "data" / "raw").glob("*.root"), *(repo / "models").glob("*")])


def roundtrip(repo: Path, remote: str) -> None:
    """push -> delete the cache and the workspace copies -> pull -> byte-identical files."""
    before = digest(files(repo))
    assert len(before) == 6
    dvc(repo, "push", "-q", "-r", remote)
    shutil.rmtree(repo / ".dvc" / "cache")
    for p in files(repo):
        p.unlink()
    shutil.rmtree(repo / "models")
    assert not files(repo)
    dvc(repo, "pull", "-q", "-r", remote)
    assert digest(files(repo)) == before
    assert "in sync" in dvc(repo, "status", "-c", "-r", remote)


def committed_config(repo: Path) -> str:
    return (repo / ".dvc" / "config").read_text()


def test_project_default_remote_is_an_eos_directory():
    from configobj import ConfigObj  # DVC's own config format

    cfg = ConfigObj(str(ROOT / ".dvc" / "config"))
    default = cfg["core"]["remote"]
    assert cfg[f'remote "{default}"']["url"].startswith("/eos/")
    text = (ROOT / ".dvc" / "config").read_text().lower()
    assert not any(k in text for k in ("password", "secret", "access_key", "token")), "credentials in .dvc/config"


def test_directory_remote_roundtrip(repo, tmp_path):
    """The default remote `eos` pointed (locally) at a directory, as on an EOS FUSE mount."""
    store = tmp_path / "eos" / "project" / "f" / "flashsim" / "dvc-store"
    store.mkdir(parents=True)
    dvc(repo, "remote", "modify", "--local", "eos", "url", str(store))
    roundtrip(repo, "eos")
    assert any(store.rglob("*")), "nothing was written to the directory remote"


def test_webdav_remote_through_xrootd_http(repo, xrootd):
    """EOS's HTTPS route: WebDAV against a real XRootD server (XrdHttp) on loopback."""
    dvc(repo, "remote", "add", "--local", "-f", "xrd", f"{xrootd.webdav_url}/dvcstore")
    roundtrip(repo, "xrd")
    stored = [p for p in (xrootd.root / "dvcstore").rglob("*") if p.is_file()]
    assert len(stored) >= 6  # every object landed in the XRootD-exported directory


def test_s3_remote_through_moto(repo, s3):
    bucket = s3.create_bucket("flashsim-dvc-test")
    dvc(repo, "remote", "modify", "--local", "s3", "url", f"s3://{bucket}/store")
    dvc(repo, "remote", "modify", "--local", "s3", "endpointurl", s3.endpoint)
    dvc(repo, "remote", "modify", "--local", "s3", "access_key_id", s3.access_key)
    dvc(repo, "remote", "modify", "--local", "s3", "secret_access_key", s3.secret_key)
    roundtrip(repo, "s3")
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(keys) >= 6
    local = (repo / ".dvc" / "config.local").read_text()
    assert s3.secret_key in local and "secret_access_key" not in committed_config(repo)
