"""MLflow runs and registry against the default local SQLite store, a real `mlflow server`, an unreachable
server and a server that goes away during the job."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flashsim.errors import GateError
from flashsim.mlops import model_registry, provenance, runs

ROOT = Path(__file__).resolve().parents[1]


def make_project(path: Path, store_template: Path | None = None) -> Path:
    """A scratch flashsim project: params + schema, a git commit, one prepared Parquet file; with
    ``store_template``, an initialised (empty) local MLflow store (saves the schema migrations)."""
    path.mkdir(parents=True, exist_ok=True)
    if store_template is not None:
        shutil.copy(store_template, path / runs.LOCAL_DB)
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    shutil.copytree(ROOT / "schemas", path / "schemas")
    (path / ".gitignore").write_text("mlflow.db*\nmlruns/\nresults/\n")
    git = ["git", "-C", str(path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "scratch"], check=True)
    prepared = path / "results" / "prepared" / "tracking"
    prepared.mkdir(parents=True)
    rng = np.random.default_rng(1)
    pq.write_table(pa.table({"p": rng.random(50, dtype="f4"), "n_tracks": np.arange(50, dtype="i4")}),
                   prepared / "train.parquet")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_store_template) -> Path:
    return make_project(tmp_path_factory.mktemp("proj"), mlflow_store_template)


@pytest.fixture
def tracked(monkeypatch, project):
    monkeypatch.setenv("FLASHSIM_MLFLOW", "on")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(project)
    return project


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the real ``flashsim`` entry point in-process (saves an interpreter start + MLflow import per call)."""
    from flashsim.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def build(name: str, root: Path, onnx_bytes: bytes, metrics: dict, passed: bool, epochs: int = 4,
          env: dict | None = None) -> tuple[str, str | None]:
    """train -> export -> validate of a fake model, as the drivers do it; returns (run id, version)."""
    params = {"family": "mlp", "hidden": [16, 16], "optim": {"lr": 1e-3}}
    config = {"scale": "demo", "seed": 7, "models": {name: params}}
    train = root / "results" / "prepared" / "tracking" / "train.parquet"
    with runs.start_job("train", name, params=params, config=config, inputs={"train": train}, root=root,
                          device="cpu") as t:
        for epoch in range(epochs):
            t.log_metrics({"loss": 1.0 / (epoch + 1), "val_loss": 2.0 / (epoch + 1)}, step=epoch)
    onnx, card = root / "models" / f"{name}.onnx", root / "models" / f"{name}.json"
    onnx.parent.mkdir(exist_ok=True)
    onnx.write_bytes(onnx_bytes)
    card.write_text(json.dumps({"family": "mlp", "parity_max_deviation": 1e-7}))
    with runs.start_job("export", name, root=root) as t:
        version = model_registry.register_export(t, name, onnx, card)
    report = root / "reports" / name
    report.mkdir(parents=True, exist_ok=True)
    (report / "metrics.json").write_text(json.dumps(metrics))
    with runs.start_job("validate", name, root=root) as t:
        assert model_registry.record_validation(t, name, onnx, metrics, passed, report_dir=report) == version
    return t.run_id, version


def test_local_store_run_has_params_metrics_tags_datasets_artifacts(tracked, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv(provenance.ENV_RULE, "train_torch")
    monkeypatch.setenv(provenance.ENV_WILDCARDS, "model=effi")
    run_id, version = build("effi", tracked, b"onnx-bytes-1", {"auc": 0.52, "ks": {"max": 0.01}}, True)
    assert (tracked / "mlflow.db").exists() and (tracked / "mlruns").is_dir()
    store = runs.Store(runs.local_uri(tracked), tracked)
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["hidden"] == "[16, 16]" and run.data.params["optim.lr"] == "0.001"
    assert run.data.params["seed"] == "7"
    history = store.client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(e, 1.0 / (e + 1)) for e in range(4)]
    assert run.data.metrics["validation.auc"] == 0.52 and run.data.metrics["validation.ks.max"] == 0.01
    tags = run.data.tags
    # the commit of the code that ran (this checkout), not of the scratch project
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True).stdout
    assert tags["git.sha"] == head.strip() and tags["git.dirty"] == str(bool(status.strip())).lower()
    assert tags["data.train.sha256"] == provenance.file_sha256(tracked / "results/prepared/tracking/train.parquet")
    assert tags["train.slurm.job_id"] == "4242" and tags["train.snakemake.rule"] == "train_torch"
    assert tags["train.snakemake.wildcards"] == "model=effi"
    assert tags["train.host"] == socket.gethostname() and tags["train.device"] == "cpu"
    assert {"export.host", "validate.host", "validation.gates"} <= set(tags)
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.tags[0].value == "train" and "n_tracks" in dataset.dataset.schema
    artifacts = {f.path for d in ("model", "report", "provenance/train")
                 for f in store.client.list_artifacts(run_id, d)}
    assert {"model/effi.onnx", "model/effi.json", "report/metrics.json", "provenance/train/params.yaml",
            "provenance/train/environment.json", "provenance/train/git.json"} <= artifacts
    got = Path(store.client.download_artifacts(run_id, "model/effi.onnx", str(tracked / "results")))
    assert got.read_bytes() == b"onnx-bytes-1"
    mv = store.client.get_model_version_by_alias("effi", "validated")
    assert str(mv.version) == version and mv.run_id == run_id
    assert str(store.client.get_model_version_by_alias("effi", "candidate").version) == version


def test_registry_aliases_promote_compare_provenance(tracked, capsys):
    _, v1 = build("acc", tracked, b"acc-1", {"auc": 0.51}, True)
    _, v2 = build("acc", tracked, b"acc-2", {"auc": 0.71}, False)
    store = runs.Store(runs.local_uri(tracked), tracked)
    aliases = model_registry.aliases(store, "acc")
    assert aliases[v1] == ["validated"] and aliases[v2] == ["candidate"]
    with pytest.raises(GateError, match="gates failed"):
        model_registry.promote(store, "acc", v2)
    code, _, err = cli(capsys, "promote", "acc", v2)
    assert code == 3 and "only validated versions" in err
    code, _, err = cli(capsys, "promote", "acc", v1)
    assert code == 0, err
    assert model_registry.aliases(store, "acc")[v1] == ["production", "validated"]
    code, out, err = cli(capsys, "compare")
    assert code == 0, err
    blocks = {b.split()[0]: b.splitlines() for b in out.split("\n\n")[1:]}
    assert {"acc", "effi"} <= set(blocks)
    assert blocks["acc"][0].split() == ["acc", f"v{v1}", f"v{v2}"]
    row = {line.split()[0]: line.split()[1:] for line in blocks["acc"][2:]}
    assert row["aliases"] == ["production,validated", "candidate"] and row["gates"] == ["passed", "failed"]
    assert row["auc"] == ["0.51", "0.71"]
    data = json.loads(cli(capsys, "compare", "acc", "--json")[1])
    assert list(data) == ["acc"] and [v["metrics"]["validation.auc"] for v in data["acc"]] == [0.51, 0.71]
    info = json.loads(cli(capsys, "provenance", "acc@production", "--json")[1])
    assert info["version"] == v1 and info["onnx_sha256"] == hashlib.sha256(b"acc-1").hexdigest()
    assert info["params"]["optim.lr"] == "0.001" and info["metrics"] == {"validation.auc": 0.51}
    assert info["data"]["train"]["sha256"] and info["provenance"]["train"]["config"]["seed"] == 7
    text = cli(capsys, "provenance", "acc@production")[1]
    assert info["git"]["sha"] in text and "auc = 0.51" in text
    code, _, err = cli(capsys, "provenance", "acc@nope")
    assert code == 2 and "no registered model version 'acc@nope'" in err


def test_mlflow_off_records_nothing_in_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHSIM_MLFLOW", "off")
    with runs.start_job("train", "x", params={"a": 1}, root=tmp_path) as t:
        t.log_metrics({"loss": 1.0}, step=0)
        t.set_tags({"family": "mlp"})
    assert not t.active and not (tmp_path / "mlflow.db").exists()
    # the run's local record is written whatever MLflow does
    local = tmp_path / "results" / "train" / "x"
    (line,) = (local / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["step"] == 0 and json.loads(line)["loss"] == 1.0
    assert json.loads((local / "tags.json").read_text()) == {"family": "mlp"}


def test_unreachable_server_falls_back_to_local_store(tracked, monkeypatch, capfd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with runs.start_job("train", "fallback", params={"a": 1}, root=tracked) as t:
        t.log_metrics({"loss": 0.5}, step=0)
    assert "unreachable" in capfd.readouterr().err
    assert t.uri == runs.local_uri(tracked) and t.fallback
    run = runs.Store(runs.local_uri(tracked), tracked).client.get_run(t.run_id)
    assert run.data.tags[runs.INTENDED_TAG] == f"http://127.0.0.1:{port}"
    assert "ConnectionError" in run.data.tags[runs.FALLBACK_TAG]
    assert run.data.metrics["loss"] == 0.5 and run.data.params["a"] == "1"


class _Proxy(socketserver.ThreadingTCPServer):
    """A real TCP forwarder in front of the MLflow server that the test can pull the plug on (``cut``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.sockets = target, []
        super().__init__(("127.0.0.1", 0), _Pipe)

    def cut(self) -> None:
        """Stop accepting and drop every open connection (kept-alive ones included)."""
        self.shutdown()
        self.server_close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        upstream = socket.create_connection(self.server.target)
        self.server.sockets += [upstream, self.request]

        def pump(a: socket.socket, b: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := a.recv(65536):
                    b.sendall(data)
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        t = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
        t.start()
        pump(self.request, upstream)
        t.join()


def test_server_lost_during_job_replays_into_local_store(tracked, monkeypatch, mlflow_tracking_server, capfd):
    _, port = mlflow_tracking_server.url.rsplit(":", 1)
    proxy = _Proxy(("127.0.0.1", int(port)))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with runs.start_job("train", "lost", params={"lr": 0.1}, root=tracked) as t:
        assert not t.fallback
        server_run = t.run_id
        t.log_metrics({"loss": 1.0}, step=0)
        t.flush()  # metrics are buffered for up to FLUSH_SECONDS: make this one reach the server
        proxy.cut()
        for epoch in (1, 2):
            t.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
    assert "failed during the job" in capfd.readouterr().err
    assert t.fallback and t.run_id != server_run
    local = runs.Store(runs.local_uri(tracked), tracked).client
    run = local.get_run(t.run_id)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.1"
    assert run.data.tags[runs.INTENDED_RUN_TAG] == server_run
    assert [m.value for m in local.get_metric_history(t.run_id, "loss")] == [1.0, 0.5, 1.0 / 3]
    # what reached the server before the failure is there too
    from mlflow import MlflowClient

    remote = MlflowClient(mlflow_tracking_server.url)
    assert [m.value for m in remote.get_metric_history(server_run, "loss")] == [1.0]


def test_eight_concurrent_jobs_lose_nothing(tmp_path, mlflow_tracking_server):
    """8 training processes log to one server at once: every run, metric point, artifact and version arrives."""
    from mlflow import MlflowClient

    root = make_project(tmp_path / "proj")
    env = {**os.environ, "FLASHSIM_MLFLOW": "on", "MLFLOW_TRACKING_URI": mlflow_tracking_server.url,
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    epochs = 40
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "mlflow_worker.py"), f"conc{i}", str(i),
                               str(epochs), str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              text=True) for i in range(8)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    client = MlflowClient(mlflow_tracking_server.url)
    assert len({r["run_id"] for r in results}) == 8
    for r in results:
        assert r["uri"] == mlflow_tracking_server.url and not r["fallback"], r
        run = client.get_run(r["run_id"])
        assert run.info.status == "FINISHED" and run.data.params["seed"] == r["name"][4:]
        history = client.get_metric_history(r["run_id"], "loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(enumerate(r["losses"]))
        assert len(client.get_metric_history(r["run_id"], "accuracy")) == epochs
        dst = tmp_path / "dl" / r["name"]
        got = Path(client.download_artifacts(r["run_id"], f"model/{r['name']}.onnx", str(dst)))
        assert provenance.file_sha256(got) == r["onnx_sha256"]
        mv = client.get_model_version_by_alias(r["name"], "candidate")
        assert str(mv.version) == r["version"] == "1" and mv.run_id == r["run_id"]
        assert mv.tags["onnx_sha256"] == r["onnx_sha256"]


def test_experiment_kind_variant_run_names_and_the_invocation_parent_run(tracked, monkeypatch):
    """Experiments open on runs (kind tag) and say what they hold; two hyperparameter variants at one commit get
    different run names (params hash), `dvc exp run` names them after the experiment; one invocation's parent run
    (flashsim.mlops.workflow, as rules/mlops.smk calls it) holds every run its jobs created or continued."""
    from flashsim.mlops import workflow

    for key in (runs.PARENT_RUN_ENV, runs.PARENT_URI_ENV, workflow.OWNER_ENV, "DVC_EXP_NAME"):
        monkeypatch.setenv(key, "")  # restored (removed) after the test
        monkeypatch.delenv(key)
    parent = workflow.start_parent(tracked, argv=["snakemake", "--cores", "2"])
    assert parent and os.environ[runs.PARENT_URI_ENV] == runs.local_uri(tracked)
    assert workflow.start_parent(tracked) is None  # a nested invocation keeps the outer parent
    try:
        with runs.start_job("train", "variant", params={"lr": 1e-3}, root=tracked) as a:
            pass
        with runs.start_job("export", "variant", root=tracked) as b:  # continues a
            pass
        with runs.start_job("train", "variant", params={"lr": 1e-2}, root=tracked) as c:
            pass
        monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
        with runs.start_job("train", "variant", params={"lr": 1e-2}, root=tracked) as d:
            pass
        (tracked / "reports").mkdir(exist_ok=True)
        (tracked / "reports" / "metrics.json").write_text(json.dumps({"variant": {"auc": 0.7, "passed": True}}))
    finally:
        workflow.finish_parent("FINISHED", tracked)
    assert runs.PARENT_RUN_ENV not in os.environ
    client = runs.Store(runs.local_uri(tracked), tracked).client
    assert b.run_id == a.run_id
    exp = client.get_experiment_by_name("flashsim/variant")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "variant" in exp.tags["mlflow.note.content"]
    names = [client.get_run(r.run_id).info.run_name for r in (a, c, d)]
    assert names[0] != names[1] and names[0].startswith("variant ") and " p" in names[0]
    assert names[2] == "variant lucky-lark"
    children = client.search_runs([exp.experiment_id, client.get_experiment_by_name("flashsim/workflow").experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in children} == {a.run_id, c.run_id, d.run_id}
    assert client.get_run(a.run_id).data.tags["export.workflow_run_id"] == parent
    top = client.get_run(parent)
    assert top.info.status == "FINISHED" and top.data.tags["snakemake.argv"] == "snakemake --cores 2"
    assert top.data.metrics == {"variant.auc": 0.7, "variant.passed": 1.0}
    assert client.get_experiment(top.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
