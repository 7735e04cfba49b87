"""Real servers on loopback for the tests: XRootD (root:// and WebDAV over XrdHttp), moto S3, MLflow tracking.

Each server is a context manager (start, wait until it answers, stop and reap on exit) and a session fixture
(imported by conftest.py), so every server starts at most once per test session. A server whose program is
missing makes its tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, proc: subprocess.Popen, log: Path | None) -> None:
    """Poll ``check`` until true; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    stop(proc)
    raise RuntimeError(f"server {proc.args!r} did not come up (exit {proc.poll()}):\n{tail}")


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as err:
            return err.code < 500

    return check


def port_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    return check


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate the server's process group and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


def _program(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed (make system / the test extra installs it)")
    return path


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    fh = open(log, "ab")
    try:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True)
    finally:
        fh.close()


# ------------------------------------------------------------------------------------------------- XRootD
@dataclass
class XRootD:
    root: Path  # the exported directory (``oss.localroot``)
    port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"root://127.0.0.1:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def webdav_url(self) -> str:
        return f"webdav://127.0.0.1:{self.http_port}"


@contextlib.contextmanager
def xrootd_server() -> Iterator[XRootD]:
    """xrootd exporting a scratch directory over root:// and HTTP/WebDAV (XrdHttp)."""
    exe = _program("xrootd")
    work = Path(tempfile.mkdtemp(prefix="flashsim-xrootd-"))
    data, admin = work / "data", work / "admin"
    data.mkdir()
    admin.mkdir()
    port, http_port = free_port(), free_port()
    cfg = work / "xrootd.cfg"
    cfg.write_text(f"all.export /\noss.localroot {data}\nxrd.port {port}\n"
                   f"xrd.protocol XrdHttp:{http_port} libXrdHttp.so\nall.adminpath {admin}\nall.pidpath {admin}\n")
    cmd = [exe, "-c", str(cfg), "-l", str(work / "xrootd.log"), "-n", "flashsim"]
    if os.geteuid() == 0:  # xrootd refuses to run as root: drop to the package's user
        user = "xrootd" if _has_user("xrootd") else "nobody"
        pw = pwd.getpwnam(user)
        for p in (work, data, admin):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(work, 0o755)
        cmd += ["-R", user]
    proc = _spawn(cmd, work / "console.log")
    logfile = work / "flashsim" / "xrootd.log"
    try:
        wait_until(port_open(http_port), 30, proc, logfile)
        wait_until(port_open(port), 30, proc, logfile)
        yield XRootD(data, port, http_port)
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# ------------------------------------------------------------------------------------------------- moto S3
@dataclass
class S3:
    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


@contextlib.contextmanager
def moto_s3_server() -> Iterator[S3]:
    """moto_server: an S3-compatible endpoint on loopback (in-memory)."""
    exe = _program("moto_server")
    work = Path(tempfile.mkdtemp(prefix="flashsim-moto-"))
    port = free_port()
    proc = _spawn([exe, "-H", "127.0.0.1", "-p", str(port)], work / "moto.log")
    try:
        wait_until(http_ok(f"http://127.0.0.1:{port}/moto-api/"), 60, proc, work / "moto.log")
        yield S3(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- MLflow
@dataclass
class MLflow:
    url: str
    db: Path
    artifacts: Path
    proc: subprocess.Popen


@contextlib.contextmanager
def mlflow_server(workdir: Path | None = None, port: int | None = None,
                  store_template: Path | None = None) -> Iterator[MLflow]:
    """``mlflow server`` (SQLite backend, proxied artifacts, one worker, no job-execution workers);
    ``store_template``: an initialised empty store to start from (skips the schema migrations)."""
    exe = _program("mlflow")
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="flashsim-mlflow-"))
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    db, artifacts = work / "mlflow.db", work / "artifacts"
    if store_template is not None and not db.exists():
        shutil.copy(store_template, db)
    cmd = [exe, "server", "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(artifacts),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = _spawn(cmd, work / "server.log", env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(http_ok(f"{url}/health"), 90, proc, work / "server.log")
        yield MLflow(url, db, artifacts, proc)
    finally:
        stop(proc)
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class TeamMLflow:
    """The team server of scripts/start-mlflow.sh: basic-auth, several workers; ``users``: name -> password."""

    url: str
    dir: Path
    admin: tuple[str, str]
    users: dict[str, str]
    proc: subprocess.Popen

    def uri_for(self, user: str) -> str:
        """The tracking URI with ``user``'s credentials in it (``http://USER:PW@host:port``)."""
        return self.url.replace("://", f"://{user}:{self.users[user]}@")


@contextlib.contextmanager
def team_mlflow_server(workers: int = 4) -> Iterator[TeamMLflow]:
    """``scripts/start-mlflow.sh`` on loopback: MLflow's basic-auth app, ``workers`` workers, users alice, bob, ci."""
    _program("mlflow")
    work = Path(tempfile.mkdtemp(prefix="flashsim-team-mlflow-"))
    port = free_port()
    users = {u: f"{u}-{secrets.token_hex(8)}" for u in ("alice", "bob", "ci")}  # random: never in a source file
    (work / "users").write_text("".join(f"{u} {p}\n" for u, p in users.items()))
    admin = ("admin", f"admin-{secrets.token_hex(8)}")
    env = {"MLFLOW_AUTH_ADMIN_PASSWORD": admin[1], "FLASHSIM_MLFLOW_DIR": str(work / "server"),
           "FLASHSIM_MLFLOW_PORT": str(port), "FLASHSIM_MLFLOW_WORKERS": str(workers),
           "FLASHSIM_MLFLOW_USERS": str(work / "users"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{Path(__file__).resolve().parents[1] / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = work / "server.log"
    script = Path(__file__).resolve().parents[1] / "scripts" / "start-mlflow.sh"
    proc = _spawn(["bash", str(script)], log, env=env, cwd=work)
    try:
        wait_until(lambda: b"start-mlflow: MLflow with authentication" in log.read_bytes(), 300, proc, log)
        yield TeamMLflow(f"http://127.0.0.1:{port}", work / "server", admin, users, proc)
    finally:
        stop(proc, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def xrootd() -> Iterator[XRootD]:
    with xrootd_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    with moto_s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_tracking_server(mlflow_store_template) -> Iterator[MLflow]:
    with mlflow_server(store_template=mlflow_store_template) as server:
        yield server


@pytest.fixture(scope="session")
def team_mlflow() -> Iterator[TeamMLflow]:
    with team_mlflow_server() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory) -> Path:
    """An empty, fully migrated MLflow SQLite store to copy into scratch projects (migrations take seconds)."""
    from flashsim.mlops.runs import LOCAL_DB, Store

    path = tmp_path_factory.mktemp("mlflow-template")
    Store(f"sqlite:///{path / LOCAL_DB}", path)
    return path / LOCAL_DB
