""".gitlab-ci.yml with gitlab-ci-local (shell executor) on a fresh clone: which jobs each kind of change starts,
and (slow) the lint, test and retrain jobs run green for real."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GCL = ROOT / "node_modules" / ".bin" / "gitlab-ci-local"
GIT_ENV = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.org",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.org"}

if not GCL.exists() or not shutil.which("rsync"):
    pytest.skip("gitlab-ci-local and rsync come with scripts/setup-system.sh (make test)", allow_module_level=True)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout


def fresh_clone(dest: Path) -> Path:
    """A clone of this repository holding the working tree as one commit on branch ci-test, with main (and
    origin/main, what gitlab-ci-local compares changes against) at that same commit."""
    git(ROOT.parent, "clone", "-q", str(ROOT), str(dest))
    files = git(ROOT, "ls-files", "-z", "-co", "--exclude-standard").split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.exists() or src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).unlink(missing_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    for rel in git(dest, "ls-files", "-z").split("\0"):
        if rel and not (ROOT / rel).exists() and not (ROOT / rel).is_symlink():
            (dest / rel).unlink()  # deleted in the working tree
    git(dest, "checkout", "-q", "-B", "ci-test")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "--allow-empty", "-m", "working tree under test")
    git(dest, "branch", "-f", "main", "HEAD")
    git(dest, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(dest, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    return dest


def gcl(repo: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CI_", "GITLAB_", "MLFLOW_")) and k != "FLASHSIM_MLFLOW"}
    # predefined variables the tests set on purpose
    quiet = ["--ignore-predefined-vars",
             "CI_PIPELINE_SOURCE,CI_COMMIT_BRANCH,CI_API_V4_URL,CI_PROJECT_ID,CI_COMMIT_TAG"]
    return subprocess.run([str(GCL), "--no-color", *quiet, *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout)


def jobs(repo: Path, *variables: str, validate: bool = False) -> dict[str, str]:
    """``job -> when`` of the pipeline gitlab-ci-local would run, for pipeline variables ``K=V``."""
    args = ["--list-json"] + ([] if validate else ["--no-json-schema-validation"])
    for v in variables:
        args += ["--variable", v]
    proc = gcl(repo, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listing = json.loads(proc.stdout[proc.stdout.index("[\n"):])
    return {j["name"]: j["when"] for j in listing if j["when"] != "never"}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return fresh_clone(tmp_path_factory.mktemp("ci") / "repo")


def commit_change(repo: Path, rel: str, text: str = "\n# touched\n") -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"touch {rel}")


def test_retrain_runs_only_when_data_params_workflow_code_or_envs_change(clone):
    base = git(clone, "rev-parse", "HEAD").strip()
    assert jobs(clone, validate=True) == {"lint": "on_success", "test": "on_success"}
    for rel, retrain in [("README.md", False), ("tests/test_config.py", False), ("params.yaml", True),
                         ("src/flashsim/cluster.py", True), ("rules/data.smk", True), ("Snakefile", True),
                         ("envs/train.yaml", True), ("data/raw/tracking.root.dvc", True)]:
        commit_change(clone, rel)
        assert ("retrain" in jobs(clone)) == retrain, rel
        git(clone, "reset", "-q", "--hard", base)


def test_scheduled_and_manual_pipelines_retrain_and_promote_is_manual(clone):
    for source in ("schedule", "web"):
        assert jobs(clone, f"CI_PIPELINE_SOURCE={source}")["retrain"] == "on_success", source
    assert jobs(clone, "FLASHSIM_RETRAIN=1")["retrain"] == "on_success"
    assert jobs(clone, "CI_COMMIT_BRANCH=main")["promote"] == "manual"
    assert "promote" not in jobs(clone)  # not offered on feature branches
    # the branch a retrain published (its dvc.lock) does not retrain again
    assert "retrain" not in jobs(clone, "CI_PIPELINE_SOURCE=web", "CI_COMMIT_BRANCH=retrain/0abc123-7")


# --- the jobs for real ---------------------------------------------------------------------------------------

def provisioned_venv(dest: Path, repo: Path) -> Path:
    """A runner-provided environment (the VENV variable): a venv layered on the one running these tests (a .pth
    file points at its packages, console scripts are re-pointed), stamped as up to date for ``repo``'s
    pyproject.toml so that scripts/setup-env.sh leaves it as it is."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(dest)], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(dest), "platbase": str(dest)})["purelib"])
    site_dirs = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]  # incl. layered ones
    (purelib / "_flashsim_runner.pth").write_text("".join(f"{p}\n" for p in site_dirs))
    shared_bin, python = Path(sys.prefix) / "bin", dest / "bin" / "python"
    for script in shared_bin.iterdir():
        if script.name.startswith(("python", "activate")) or not script.is_file():
            continue
        head, _, body = script.read_bytes().partition(b"\n")
        if head.startswith(b"#!") and b"python" in head:
            target = dest / "bin" / script.name
            target.write_bytes(b"#!" + str(python).encode() + b"\n" + body)
            target.chmod(0o755)
    stamp = subprocess.run("sha256sum pyproject.toml scripts/setup-env.sh | sha256sum | cut -c1-16", shell=True,
                           cwd=repo, check=True, capture_output=True, text=True).stdout
    (dest / ".flashsim-env").write_text(stamp)
    return dest


class _NoteCatcher(http.server.BaseHTTPRequestHandler):
    """Stands in for GitLab's notes API: records what the retrain job posts."""

    posted: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posted.append({"path": self.path, "token": self.headers.get("PRIVATE-TOKEN"), **json.loads(body)})
        self.send_response(201)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def gitlab_api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoteCatcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _NoteCatcher.posted.clear()
    yield f"http://127.0.0.1:{server.server_port}/api/v4"
    server.shutdown()


@pytest.mark.slow
@pytest.mark.skipif("CI_JOB_ID" in os.environ, reason="already inside a CI job: the pipeline does not run itself")
def test_lint_test_and_retrain_jobs_run_green(tmp_path, mlflow_tracking_server, gitlab_api):
    repo = fresh_clone(tmp_path / "repo")
    venv = provisioned_venv(tmp_path / "venv", repo)
    store = tmp_path / "dvc-store"
    store.mkdir()
    published = tmp_path / "published.git"  # stands in for the GitLab project the retrain branch is pushed to
    git(tmp_path, "init", "-q", "--bare", str(published))
    tiny = " ".join(_tiny_overrides(repo))
    selection = "-m 'not slow' tests/test_config.py"  # small: the suite runs elsewhere, this shows the job works
    variables = {
        "VENV": str(venv), "PYTEST_ARGS": selection,
        "CI_PIPELINE_SOURCE": "web",  # a manual pipeline: retrain runs whatever changed
        "FLASHSIM_DEVICE": "cpu", "FLASHSIM_SCALE": "demo", "FLASHSIM_PARAMS": tiny,
        "DVC_REMOTE_URL": str(store), "MLFLOW_TRACKING_URI": mlflow_tracking_server.url,
        # as in a merge-request pipeline with a token: the metrics diff becomes a note
        "FLASHSIM_GITLAB_TOKEN": "glpat-test", "CI_MERGE_REQUEST_IID": "7", "CI_API_V4_URL": gitlab_api,
        "CI_PROJECT_ID": "42", "FLASHSIM_PUSH_URL": str(published),
    }
    args = [a for k, v in variables.items() for a in ("--variable", f"{k}={v}")]
    main_has_lock = (repo / "dvc.lock").exists()  # before the run: dvc.lock comes back as a retrain artifact
    proc = gcl(repo, "--force-shell-executor", "--shell-isolation", *args,  # a fresh copy of the clone per job
               "lint", "test", "retrain", timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-8000:]
    for job in ("lint", "test", "retrain"):
        assert f"PASS  {job}" in log, log[-4000:]
    assert "Congratulations, your workflow is in a good condition" in log  # snakemake --lint
    assert re.search(r"test +> =+ \d+ passed", log), "pytest did not run in the test job"
    # retrain: pushed to the DVC remote, printed the metrics diff, posted it, kept reports as artifacts
    assert any(p.is_file() for p in store.rglob("*")), "dvc push wrote nothing to the remote"
    assert "flashsim retrain: metrics against `origin/main`" in log
    # without a dvc.lock on main the diff says so (the published branch, once merged, gives main its baseline)
    assert ("No dvc.lock on `origin/main` yet" in log) == (not main_has_lock)
    # dvc.lock (+ the overridden params.yaml) published on a retrain/ branch: what was pushed is reachable
    (branch,) = git(published, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()
    assert branch.startswith("retrain/"), branch
    lock = yaml.safe_load(git(published, "show", f"{branch}:dvc.lock"))
    assert "workflow" in lock["stages"] and any(o["path"] == "models" for o in lock["stages"]["workflow"]["outs"])
    assert "retrain: dvc.lock" in git(published, "log", "-1", "--format=%s", branch)
    (note,) = _NoteCatcher.posted
    assert note["path"] == "/api/v4/projects/42/merge_requests/7/notes" and note["token"] == "glpat-test"
    assert note["body"].startswith("### flashsim retrain: metrics against `origin/main`")
    artifacts = repo / ".gitlab-ci-local" / "artifacts" / "retrain"
    assert (artifacts / "retrain-metrics-diff.md").read_text() == note["body"]
    models = _model_names(repo / ".gitlab-ci-local" / "builds" / "retrain")  # params as the job overrode them
    assert models and (artifacts / "reports" / "metrics.json").exists()
    for name in models:
        assert (artifacts / "reports" / name / "metrics.json").exists(), name
        assert (artifacts / "models" / f"{name}.json").exists(), name
    # the trainings logged to the MLflow server given as a CI variable
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_tracking_server.url)
    for name in models:
        exp = client.get_experiment_by_name(f"flashsim/{name}")
        assert exp is not None, f"no MLflow experiment for {name}"
        assert client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'"), name


def _tiny_overrides(repo: Path) -> list[str]:
    """`dvc exp run -S` overrides for a smoke retrain: a tenth of the demo samples, two epochs per torch model,
    no validation gates (models this small cannot pass them; the retrain must still go through), and the
    per-species PID models left out (60 of the workflow's 110 jobs; the chain runs without them). What remains
    covers every kind of job: LightGBM and torch (MLP, generators, GNN, Transformer) training, export,
    validation, C artifacts, the flash simulation (told to skip its PID stage: a chain's missing model is an error
    otherwise) and its physics check, the DVC metrics summary."""
    import yaml

    from flashsim.config import at_scale

    params = yaml.safe_load((repo / "params.yaml").read_text())
    out = [f"detsim.samples.{name}.size.demo={max(500, at_scale(s['size'], 'demo') // 10)}"
           for name, s in params["detsim"]["samples"].items()]
    for name, model in (params.get("models") or {}).items():
        if "species" in model:
            out.append(f"~models.{name}")
            continue
        if isinstance(model.get("epochs"), dict):
            out.append(f"models.{name}.epochs.demo=2")
        if "demo" in (model.get("gates") or {}):
            out.append(f"~models.{name}.gates.demo")
    out.append("runtime.skip=[pid]")
    return out


def _model_names(repo: Path) -> list[str]:
    sys.path.insert(0, str(repo / "src"))
    try:
        import yaml

        from flashsim.models import expand_params

        return list(expand_params(yaml.safe_load((repo / "params.yaml").read_text())))
    finally:
        sys.path.remove(str(repo / "src"))


def test_provisioned_venv_stamp_matches_setup_env(tmp_path):
    """The stamp the runner venv carries is what scripts/setup-env.sh computes (else every job would reinstall)."""
    digest = hashlib.sha256()
    for rel in ("pyproject.toml", "scripts/setup-env.sh"):
        digest.update(f"{hashlib.sha256((ROOT / rel).read_bytes()).hexdigest()}  {rel}\n".encode())
    venv = provisioned_venv(tmp_path / "venv", ROOT)
    assert (venv / ".flashsim-env").read_text().strip() == digest.hexdigest()[:16]
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import snakemake, torch; print('ok')"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
    setup = subprocess.run([str(ROOT / "scripts" / "setup-env.sh"), str(venv)], capture_output=True, text=True)
    assert setup.returncode == 0 and setup.stdout == "", setup.stdout + setup.stderr


@pytest.mark.slow
@pytest.mark.skipif("CI_JOB_ID" in os.environ, reason="already inside a CI job: the pipeline does not run itself")
def test_release_bundle_builds_on_a_tag(tmp_path, runtime_toy_models):
    """A tag pipeline has the release jobs; the build part (release-bundle) runs green under gitlab-ci-local."""
    from test_release import release_models

    from flashsim.release import build_bundle

    repo = fresh_clone(tmp_path / "repo")
    assert {"release-bundle", "release"} <= set(jobs(repo, "CI_COMMIT_TAG=v0.2.0"))
    assert not {"release-bundle", "release"} & set(jobs(repo))  # branch pipelines do not release
    models = release_models(runtime_toy_models, tmp_path / "models")
    previous = build_bundle("v0.1.0", models, tmp_path / "no-reports", tmp_path / "prev")
    venv = provisioned_venv(tmp_path / "venv", repo)
    variables = {"VENV": str(venv), "CI_COMMIT_TAG": "v0.2.0", "FLASHSIM_RELEASE_MODELS": str(models),
                 "FLASHSIM_PREVIOUS_BUNDLE": str(previous), "FLASHSIM_UPLOAD": "0"}
    args = [a for k, v in variables.items() for a in ("--variable", f"{k}={v}")]
    proc = gcl(repo, "--force-shell-executor", *args, "release-bundle", timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "PASS  release-bundle" in log, log[-6000:]
    artifacts = repo / ".gitlab-ci-local" / "artifacts" / "release-bundle" / "dist"
    (bundle,) = artifacts.glob("flashsim-models-v0.2.0-*.tar.gz")
    env = dict(line.split("=", 1) for line in (artifacts / "release.env").read_text().split())
    assert env["BUNDLE_NAME"] == bundle.name[: -len(".tar.gz")]
    assert "against v0.1.0" in (artifacts / env["BUNDLE_NAME"] / "CHANGELOG.md").read_text()
