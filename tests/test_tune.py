"""`flashsim tune NAME`: search spaces checked against the family's schema, a small study on a generator with the
embedded journal storage (baseline vs best reported honestly, pruning, MLflow nested runs, Pareto front), and the
tuned override that reruns only its model's jobs."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import scratch_repo, write_synthetic

from flashsim.errors import ConfigError
from flashsim.tune.space import load_tune

ROOT = Path(__file__).resolve().parents[1]

GEN = {"family": "generator", "sample": "synth", "features": ["p", "eta", "x1"], "targets": ["y1", "y2"],
       "method": "flow", "width": 16, "depth": 2, "epochs": 3, "batch_size": 256, "lr": 2.0e-4,
       "validation_rows": 1000, "bins": {"p": "p", "eta": "eta", "n_p": 2, "n_eta": 2}}
SPACE = {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
         "width": {"type": "int", "low": 8, "high": 32, "step": 8}}


def tune_repo(tmp_path: Path, tune: dict, entry: dict | None = None, **models) -> Path:
    root = scratch_repo(tmp_path, {"gen": {**(entry or GEN), "tune": tune}, **models})
    write_synthetic(root, n=6000)
    return root


def flashsim(root: Path, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "flashsim", *args], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})


@pytest.mark.parametrize("tune, message", [
    ({"n_trials": 2, "params": {"lrr": {"type": "float", "low": 0.1, "high": 1}}},
     "models/gen/tune/params/lrr: 'lrr' is not a hyperparameter of family"),
    ({"n_trials": 2, "params": {"lr": {"type": "float", "low": 0.0, "high": 0.1}}},
     "models/gen/tune/params/lr: value 0.0 is invalid for the family"),
    ({"n_trials": 2, "params": {"method": {"type": "categorical", "choices": ["flow", "vae"]}}},
     "models/gen/tune/params/method: value 'vae' is invalid"),
    ({"n_trials": 2, "params": {"lr": {"type": "float", "low": 0.1, "high": 0.01}}},
     "models/gen/tune/params/lr: low (0.1) must be below high (0.01)"),
    ({"n_trials": 2, "params": {"width": {"type": "int", "low": 8, "high": 64, "logg": True}}},
     "models/gen/tune/params/width: unknown key(s) ['logg']"),
    ({"n_trials": 2, "params": {"features": {"type": "categorical", "choices": [["p"]]}}},
     "describes the data, not the model"),
    ({"params": SPACE}, "models/gen/tune: give n_trials or timeout"),
    ({"n_trials": 2, "params": SPACE, "fixed": {"epochs": 0}}, "models/gen/tune/fixed/epochs: value 0"),
    ({"n_trials": 2, "params": SPACE, "objective": "log_loss"}, "'log_loss' is not a metric of a generator"),
])
def test_bad_search_spaces_are_config_errors_naming_the_key(tmp_path, tune, message):
    from flashsim.config import load_params

    root = scratch_repo(tmp_path, {"gen": {**GEN, "tune": tune}})
    with pytest.raises(ConfigError) as err:
        load_tune("gen", load_params(root / "params.yaml"))
    assert message in str(err.value)


def test_unknown_tune_keys_fail_at_load_and_on_the_command_line(tmp_path):
    root = scratch_repo(tmp_path, {"gen": {**GEN, "tune": {"n_trials": 2, "params": SPACE, "n_trails": 3}}})
    proc = flashsim(root, "tune", "gen")
    assert proc.returncode == 2
    assert "params.yaml: models/gen/tune: Additional properties are not allowed ('n_trails'" in proc.stderr
    assert not (root / "results" / "tune").exists()  # no partial output


def test_assembled_family_points_at_its_stages(tmp_path):
    from flashsim.config import load_params

    entry = {"family": "pid_pipeline", "sample": "calib_{species}", "species": ["K"], "features": ["p"],
             "stages": {"rich": "pid_rich_{species}"}, "tune": {"n_trials": 1, "params": SPACE}}
    root = scratch_repo(tmp_path, {"pipe": entry})
    with pytest.raises(ConfigError, match="tune its stages"):
        load_tune("pipe_K", load_params(root / "params.yaml"))


def test_tune_block_never_reruns_the_model_jobs():
    from flashsim.models import stage_params

    base = {"family": "generator", "lr": 0.1}
    for stage in ("train", "export", "validate"):
        assert stage_params(base, stage, 1, "demo") == stage_params({**base, "tune": {"n_trials": 3}}, stage, 1,
                                                                     "demo")


@pytest.mark.slow
def test_demo_study_on_a_generator(tmp_path, monkeypatch):
    """A few tiny trials: the baseline (params.yaml values, a poor learning rate) is trial 0, the objective is the
    validation split's two-sample AUC, pruning stops some trials from their per-epoch val_loss, each trial is an
    MLflow run nested under the study's run, and the report states whether the best beat the baseline."""
    import mlflow
    import optuna

    root = tune_repo(tmp_path, {"n_trials": 5, "params": SPACE, "sampler": {"name": "tpe", "n_startup_trials": 2},
                                "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}})
    proc = flashsim(root, "tune", "gen", env={"FLASHSIM_MLFLOW": "on"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((root / "results/tune/gen/report.json").read_text())
    assert rep["metrics"] == ["two_sample_auc"] and rep["storage"] == "journal:results/tune/gen/journal.log"
    trials = rep["trials"]
    assert trials[0]["baseline"] and trials[0]["params"] == {"lr": 2.0e-4, "width": 16}
    assert rep["states"]["COMPLETE"] + rep["states"]["PRUNED"] == 5 and rep["states"]["RUNNING"] == 0
    done = [t for t in trials if t["state"] == "COMPLETE"]
    assert all(0.0 <= t["metrics"]["two_sample_auc"] <= 1.0 and t["values"] == [t["metrics"]["two_sample_auc"]]
               for t in done)
    assert all(t["intermediate_steps"] >= 1 for t in trials)  # every trial reported per-epoch values
    best = min(done, key=lambda t: t["values"][0])
    assert rep["best"]["trial"] == best["number"]
    assert rep["improved"] == (best["values"][0] < trials[0]["values"][0])  # honest, whatever the outcome
    md = (root / "results/tune/gen/report.md").read_text()
    assert ("improved on the baseline" if rep["improved"] else "did NOT improve on the baseline") in md
    print(md)
    # the proposal records study, trial and objective; the trials never touched the model's own outputs
    prop = yaml.safe_load((root / "results/tune/gen/override.yaml").read_text())
    assert prop["model"] == "gen" and prop["params"] == best["params"]
    assert prop["study"]["trial"] == best["number"]
    assert prop["study"]["objective"] == {"two_sample_auc": best["values"][0]}
    assert not (root / "results/train/gen").exists() and not (root / "models").exists()
    # the val split was validated, not the test split: the trial's metrics rows = the val rows used
    import pyarrow.parquet as pq

    assert done[0]["metrics"]["rows"] == min(1000, pq.read_metadata(root / "results/prepared/synth/val.parquet")
                                             .num_rows)
    # MLflow: one parent run, each trial a nested run with its state; the best one tagged
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("flashsim/tune/gen")
    found = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 5
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    by_trial = {int(r.data.tags["tune.trial"]): r for r in children}
    for t in trials:
        run = by_trial[t["number"]]
        assert run.data.tags["optuna.state"] == t["state"]
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[t["state"]]
        assert float(run.data.params["lr"]) == pytest.approx(t["params"]["lr"])
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) >= 1  # intermediate values
    assert by_trial[best["number"]].data.tags["tune.best"] == "true"
    assert parents[0].data.tags["tune.best_trial"] == str(best["number"])
    assert "final.two_sample_auc" in by_trial[best["number"]].data.metrics
    # the study in the journal file agrees
    study = optuna.load_study(study_name="gen", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "results/tune/gen/journal.log"))))
    assert study.best_trial.number == best["number"]


@pytest.mark.slow
def test_multi_objective_pareto_front_and_workers(tmp_path):
    """Quality vs FLOPs per particle counted in the exported graph, two local worker processes on one study."""
    clf = {"family": "lgbm_classifier", "sample": "synth", "features": ["p", "eta", "x1"], "label": "label",
           "n_estimators": 10, "validation_rows": 1000, "bins": {"p": "p", "eta": "eta", "n_p": 2, "n_eta": 2},
           "tune": {"n_trials": 4, "cost": "flops", "params": {"num_leaves": {"type": "int", "low": 2, "high": 32}}}}
    root = scratch_repo(tmp_path, {"clf": clf})
    write_synthetic(root, n=6000)
    proc = flashsim(root, "tune", "clf", "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((root / "results/tune/clf/report.json").read_text())
    assert rep["metrics"] == ["log_loss", "cost.flops"] and rep["directions"] == ["minimize", "minimize"]
    assert rep["states"]["COMPLETE"] >= 4 and rep["states"]["RUNNING"] == 0
    assert {t["worker"] for t in rep["trials"]} == {"0", "1"}
    front = rep["pareto_front"]
    assert front and all(t["values"]["cost.flops"] > 0 for t in front)
    # a Pareto front: sorted by cost, the quality strictly improves
    costs = [t["values"]["cost.flops"] for t in front]
    losses = [t["values"]["log_loss"] for t in front]
    assert costs == sorted(costs) and all(a > b for a, b in itertools.pairwise(losses))
    done = [t for t in rep["trials"] if t["state"] == "COMPLETE"]
    assert all(not (o["values"][0] <= t["values"]["log_loss"] and o["values"][1] < t["values"]["cost.flops"])
               for t in front for o in done)  # nothing dominates a front member
    flops = {t["params"]["num_leaves"]: t["values"][1] for t in done}
    assert flops[max(flops)] >= flops[min(flops)]  # more leaves, deeper trees, more comparisons
    assert "## Pareto front" in (root / "results/tune/clf/report.md").read_text()


def test_tuned_override_reruns_only_that_model(tmp_path):
    """`--accept` copies the proposal to tuned/NAME.yaml; the Snakefile's params trigger then changes for that
    model's jobs only, and `flashsim train` reads the tuned values."""
    from flashsim.config import load_params
    from flashsim.models import expand_params, get_spec, stage_params

    root = tune_repo(tmp_path, {"n_trials": 1, "params": SPACE}, other={**GEN})
    params = load_params(root / "params.yaml")
    before = {(n, s): stage_params(e, s, 7, "demo") for n, e in expand_params(params, root).items()
              for s in ("train", "export", "validate")}
    prop = root / "results/tune/gen/override.yaml"
    prop.parent.mkdir(parents=True)
    prop.write_text(yaml.safe_dump({"model": "gen", "params": {"lr": 0.003, "width": 24},
                                    "study": {"name": "gen", "trial": 3, "objective": {"two_sample_auc": 0.55}}}))
    proc = flashsim(root, "tune", "gen", "--accept")
    assert proc.returncode == 0, proc.stderr
    assert (root / "tuned/gen.yaml").read_text() == prop.read_text()
    after = {(n, s): stage_params(e, s, 7, "demo") for n, e in expand_params(params, root).items()
             for s in ("train", "export", "validate")}
    assert {k for k in before if before[k] != after[k]} == {("gen", "train"), ("gen", "export"), ("gen", "validate")}
    spec = get_spec("gen", params, root)
    assert spec.cfg["lr"] == 0.003 and spec.cfg["width"] == 24
    assert get_spec("other", params, root).cfg["lr"] == GEN["lr"]
    # a malformed override is a configuration error naming the file
    (root / "tuned/gen.yaml").write_text("model: gen\nparams: {}\n")
    with pytest.raises(ConfigError, match=r"tuned/gen\.yaml: a tuned override needs a non-empty `params`"):
        expand_params(params, root)


def test_pruner_stops_training_early(tmp_path):
    """A threshold pruner below any reachable val_loss stops every trial after its first epoch: the training loop
    reports each epoch, and the trial ends PRUNED without running its remaining epochs."""
    root = tune_repo(tmp_path, {"n_trials": 2, "params": SPACE, "fixed": {"epochs": 4},
                                "pruner": {"name": "threshold", "upper": -1.0e9}})
    proc = flashsim(root, "tune", "gen")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((root / "results/tune/gen/report.json").read_text())
    assert [t["state"] for t in rep["trials"]] == ["PRUNED", "PRUNED"]
    assert [t["intermediate_steps"] for t in rep["trials"]] == [1, 1]
    assert "best" not in rep and not (root / "results/tune/gen/override.yaml").exists()  # nothing to propose
    for t in rep["trials"]:
        epochs = (root / f"results/tune/gen/trials/{t['number']:04d}/metrics.jsonl").read_text().splitlines()
        assert len(epochs) == 1


def test_dashboard_script_serves_the_study(tmp_path):
    """scripts/start-optuna-dashboard.sh NAME serves the journal file of results/tune/NAME on loopback."""
    import os
    import signal
    import time
    import urllib.request

    import optuna
    from servers import free_port

    from flashsim.tune import storage as S

    study = optuna.create_study(study_name="gen", storage=S.open_storage(S.default_url(tmp_path, "gen")))
    study.enqueue_trial({"lr": 0.01})
    port = free_port()
    proc = subprocess.Popen([str(ROOT / "scripts/start-optuna-dashboard.sh"), "gen", str(port)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    try:
        body, deadline = None, time.monotonic() + 60
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
            except OSError:
                time.sleep(0.5)
        assert body is not None and json.loads(body)["study_summaries"][0]["study_name"] == "gen"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_cost_of_an_exported_graph(tmp_path):
    """FLOPs per particle count each MatMul/Gemm against a weight (2 x K x N); latency is measured with ORT."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from flashsim.tune.cost import flops_per_particle, latency_per_particle

    w1 = numpy_helper.from_array(np.ones((3, 8), np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((8, 2), np.float32), "w2")
    b2 = numpy_helper.from_array(np.zeros(2, np.float32), "b2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [w1, w2, b2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    assert flops_per_particle(tmp_path / "m.onnx") == 2 * 3 * 8 + 2 * 8 * 2
    latency = latency_per_particle(tmp_path / "m.onnx", np.ones((1000, 3), np.float32), 0)
    assert 0 < latency < 1e-3
