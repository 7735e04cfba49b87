"""PID models per species on a real (reference-simulation) calibration sample: the stack and its chained pipeline
train -> export -> validate through the shared drivers with the params.yaml demo settings and gates; a generator
that ignores its conditions fails those gates; the chained ONNX pipeline keeps the output conventions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import scratch_repo, write_prepared_calib

from flashsim import cli
from flashsim.models import get_family, get_spec

SPECIES = "K"
N_CALIB = 60000  # candidates: 36k training rows


ROOT = Path(__file__).resolve().parents[1]


def pid_models(repo_root, species: str = SPECIES, **overrides) -> dict:
    """The PID entries of the repository's params.yaml, for one species, demo scale."""
    models = yaml.safe_load((repo_root / "params.yaml").read_text())["models"]
    out = {}
    for name, entry in models.items():
        if entry["family"] in ("pid_ismuon", "pid_generator", "pid_pipeline"):
            out[name] = {**entry, "species": [species], "validation_rows": 8000, **overrides.get(name, {})}
            if "per_species" in entry:  # only the overrides of that species
                out[name]["per_species"] = {k: v for k, v in entry["per_species"].items() if k == species}
    return out


@pytest.fixture(scope="module")
def pid_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pidrepo")
    scratch_repo(root, pid_models(ROOT), seed=20261122)
    write_prepared_calib(root, f"calib_{SPECIES}", "dstar_d0pi_K", N_CALIB, seed=3)
    return root


def _run(repo, monkeypatch, *argv) -> int:
    monkeypatch.chdir(repo)
    return cli.main(list(argv))


STAGES = [f"pid_{m}_{SPECIES}" for m in ("ismuon", "rich", "muon", "global")]
PIPELINE = f"pid_pipeline_{SPECIES}"


def test_stack_and_pipeline_pass_demo_gates(pid_repo, monkeypatch):
    for name in [*STAGES, PIPELINE]:
        assert _run(pid_repo, monkeypatch, "train", name) == 0, name
        assert _run(pid_repo, monkeypatch, "export", name) == 0, name
    for name in [*STAGES, PIPELINE]:
        rc = _run(pid_repo, monkeypatch, "validate", name)
        out = json.loads((pid_repo / "reports" / name / "metrics.json").read_text())
        assert rc == 0, (name, out["gates"])
        assert out["gates"], name
        assert (pid_repo / "reports" / name / "figures" / "pid_efficiencies.png").exists()
    card = json.loads((pid_repo / "models" / f"{PIPELINE}.json").read_text())
    assert [c["name"] for c in card["inputs"][0]["columns"]] == ["p", "eta", "nTracks", "charge"]
    outputs = [c["name"] for c in card["outputs"][0]["columns"]]
    assert outputs[0] == "isMuon" and "RichDLLk" in outputs and "ProbNNk" in outputs and "MuonMuLL" in outputs
    assert card["noise"]["dim"] == 1 + 4 + 2 + 9


def test_pipeline_onnx_conventions(pid_repo, monkeypatch):
    """One graph: isMuon in {0, 1}, muon LLs NaN exactly where isMuon == 0, ProbNN inside [0, 1] even far outside
    the training range, reproducible for a given noise."""
    import onnxruntime as ort

    if not (pid_repo / "models" / f"{PIPELINE}.onnx").exists():
        pytest.skip("pipeline not exported (first test failed)")
    sess = ort.InferenceSession(str(pid_repo / "models" / f"{PIPELINE}.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    n = 20000
    x = np.stack([np.exp(rng.uniform(np.log(500.0), np.log(1e6), n)), rng.uniform(0.5, 7.0, n),
                  rng.integers(1, 1500, n), rng.choice([-1.0, 1.0], n)], 1).astype(np.float32)
    noise = rng.standard_normal((n, 16)).astype(np.float32)
    y = sess.run(["y"], {"x": x, "noise": noise})[0]
    names = [c["name"] for c in json.loads((pid_repo / "models" / f"{PIPELINE}.json").read_text())
             ["outputs"][0]["columns"]]
    col = {c: y[:, i] for i, c in enumerate(names)}
    assert set(np.unique(col["isMuon"])) <= {0.0, 1.0} and 0 < col["isMuon"].mean() < 0.2
    on = col["isMuon"] == 1
    for c in ("MuonMuLL", "MuonBgLL"):
        assert np.isnan(col[c][~on]).all() and np.isfinite(col[c][on]).all()
    for c in names:
        if c.startswith("ProbNN"):
            assert (col[c] >= 0).all() and (col[c] <= 1).all(), c
        elif c not in ("MuonMuLL", "MuonBgLL"):
            assert np.isfinite(col[c]).all(), c
    np.testing.assert_array_equal(y, sess.run(["y"], {"x": x, "noise": noise})[0])


def test_condition_blind_generator_fails_the_gates(pid_repo, monkeypatch):
    """Every gated PID generator, with its conditions shuffled across rows (its output then ignores them), fails.
    (The isMuon classifier of a hadron is left out: a ~1 % misID rate measured on a few hundred sWeighted tracks
    cannot tell its mild momentum dependence from none at demo scale.)"""
    from flashsim import validation as V
    from flashsim.drivers import onnx_predictor

    monkeypatch.chdir(pid_repo)
    for name in [f"pid_rich_{SPECIES}", f"pid_global_{SPECIES}", PIPELINE]:
        fam = get_family(get_spec(name))
        if not fam.spec.onnx_path.exists():
            pytest.skip("models not exported (first test failed)")
        df = fam.frame("test", fam.cfg["validation_rows"])
        predict = onnx_predictor(fam.spec.onnx_path)
        perm = np.random.default_rng(1).permutation(len(df))

        def blind(x, noise=None, predict=predict, perm=perm):
            return predict(x[perm], noise)

        metrics, _ = fam.validate(df, blind, pid_repo / "reports" / f"{name}_blind")
        rows = V.evaluate_gates({k: float(v) for k, v in metrics.items()}, fam.spec.gates)
        assert not all(r["passed"] for r in rows), (name, rows)


def test_bad_weights_are_clear_errors(tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    models = pid_models(ROOT)
    scratch_repo(tmp_path, {k: v for k, v in models.items() if k == "pid_rich"})
    write_prepared_calib(tmp_path, f"calib_{SPECIES}", "dstar_d0pi_K", 3000, seed=4)
    path = tmp_path / "results" / "prepared" / f"calib_{SPECIES}" / "train.parquet"
    table = pq.read_table(path)
    good = table.column("probe_sWeight").to_numpy()
    for bad, words in ((np.where(np.arange(len(good)) == 5, np.nan, good), "non-finite"),
                       (good - good.mean(), "sum to")):
        pq.write_table(table.set_column(table.schema.get_field_index("probe_sWeight"), "probe_sWeight",
                                        [bad]), path)
        assert _run(tmp_path, monkeypatch, "train", f"pid_rich_{SPECIES}") == 2
        err = capsys.readouterr().err
        assert words in err and "probe_sWeight" in err and "train.parquet" in err, err
        assert not (tmp_path / "results" / "train" / f"pid_rich_{SPECIES}" / "trained.json").exists()


def test_bench_pid_pipeline_throughput(pid_repo, monkeypatch):
    from flashsim.bench import pid as bench_pid
    from flashsim.config import load_params

    if not (pid_repo / "models" / f"{PIPELINE}.onnx").exists():
        pytest.skip("pipeline not exported (first test failed)")
    monkeypatch.chdir(pid_repo)
    out = bench_pid.run(quick=True, params=load_params())
    (res,) = out["pipelines"]
    assert res["model"] == PIPELINE and res["noise_dim"] == 16
    assert all(r["particles_per_s"] > 0 for r in res["results"]) and res["best_particles_per_s"]["cpu"] > 0
    assert PIPELINE in bench_pid.summary(out)
