"""The ``flashsim`` command line: --version, the exit codes in --help, and a --help that does not load torch."""

from __future__ import annotations

import subprocess
import sys

import flashsim
from flashsim import cli


def _flashsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flashsim", *args], capture_output=True, text=True, timeout=120)


def test_version():
    r = _flashsim("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"flashsim {flashsim.__version__}"


def test_help_documents_exit_codes_and_every_command():
    r = _flashsim("--help")
    assert r.returncode == 0, r.stderr
    assert "exit codes:" in r.stdout
    for code, words in (("2", "bad input or configuration"), ("3", "gate failed"), ("130", "interrupted")):
        assert any(line.split()[:1] == [code] and words in line for line in r.stdout.splitlines()), (code, r.stdout)
    for name in cli.COMMANDS:
        assert name in r.stdout


def test_help_does_not_import_heavy_modules():
    """Every subcommand module is imported to build --help; none may load torch, ONNX, MLflow or matplotlib."""
    code = ("import sys; from flashsim.cli import build_parser; build_parser(); "
            "print(' '.join(m for m in ('torch', 'onnx', 'onnxruntime', 'mlflow', 'matplotlib', 'lightgbm') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "flashsim", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time")}
    assert "flashsim.cli" in imported
    assert not imported & {"torch", "onnx", "mlflow", "matplotlib"}


def test_bad_config_exits_2(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [not, an, int]\n")
    r = _flashsim("train", "pid_rich_K", "--params", str(bad))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "error" in r.stderr
