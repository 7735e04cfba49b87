"""Classifier gates that real data can compute (held-out labels only); truth-oracle gates need ``oracle:`` and are
a configuration error at load time without it; the train-side NaN tolerance is prepare's."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import scratch_repo, write_synthetic

from flashsim import cli
from flashsim import validation as V
from flashsim.config import load_params
from flashsim.errors import ConfigError
from flashsim.models import FAMILIES, expand_params, get_family
from flashsim.validation.default import CLASSIFIER_METRICS
from flashsim.validation.gates import known_metric, needs_truth

COMMON = {"sample": "synth", "features": ["p", "eta", "x1"], "bins": {"p": "p", "eta": "eta", "n_p": 3, "n_eta": 2},
          "validation_rows": 3000, "threads": 1, "family": "lgbm_classifier", "label": "label", "n_estimators": 40}
HELD_OUT = {"calibration.chi2_ndf": {"max": 4.0}, "auc": {"min": 0.7}, "log_loss_skill": {"min": 0.1},
            "brier_skill": {"min": 0.1}}


def test_baseline_scores_against_hand_computed_values():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.2, 0.9, 0.6, 0.7])
    s = V.baseline_scores(p, y)
    rate = 0.75
    base_ll = -(np.log(1 - rate) + 3 * np.log(rate)) / 4
    assert s["log_loss.baseline"] == pytest.approx(base_ll)
    assert s["log_loss"] == pytest.approx(-(np.log(0.8) + np.log(0.9) + np.log(0.6) + np.log(0.7)) / 4)
    brier = np.mean([2 * 0.2**2, 2 * 0.1**2, 2 * 0.4**2, 2 * 0.3**2])
    assert s["brier"] == pytest.approx(brier)
    assert s["brier.baseline"] == pytest.approx(np.mean([2 * 0.75**2] + 3 * [2 * 0.25**2]))
    assert s["brier_skill"] == pytest.approx(1 - brier / s["brier.baseline"])
    const = V.baseline_scores(np.full(4, rate), y)  # the baseline itself has no skill
    assert const["log_loss_skill"] == pytest.approx(0.0, abs=1e-12)
    assert const["brier_skill"] == pytest.approx(0.0, abs=1e-12)


def test_default_classifier_gates_of_params_need_no_truth():
    for name, entry in expand_params(load_params()).items():
        if entry["family"] in ("lgbm_classifier", "mlp_classifier", "ghost_mlp", "pid_ismuon"):
            for scale in ("demo", "full"):
                held_out = [m for m in entry["gates"][scale] if not needs_truth(m)]
                assert held_out and set(held_out) <= set(CLASSIFIER_METRICS) | {"pid_eff.chi2_ndf"}, (name, scale)
                assert "calibration.chi2_ndf" in held_out, name
                if entry["family"] != "pid_ismuon":  # isMuon is ~constant per species: sWeighted AUC is noise
                    assert {"auc", "log_loss_skill", "brier_skill"} <= set(held_out), name


@pytest.mark.parametrize("metric", ["logloss_gap", "auc_gap", "oracle.log_loss", "truth.signal_only_auc"])
def test_truth_gate_without_oracle_is_a_config_error_at_load(tmp_path, monkeypatch, capsys, metric):
    scratch_repo(tmp_path, {"clf": {**COMMON, "gates": {"demo": {**HELD_OUT, metric: {"max": 0.1}}}}})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"models/clf/gates/demo/{metric}: .* needs a truth oracle"):
        expand_params(load_params())
    assert cli.main(["train", "clf"]) == 2  # before anything runs
    assert "needs a truth oracle" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("family", "metric"), [("lgbm_classifier", "calibration_chi2"),
                                                ("lgbm_classifier", "two_sample_auc"),
                                                ("generator", "calibration.chi2_ndf"), ("generator", "two_sample_AUC")])
def test_gate_on_a_metric_the_family_never_writes_is_a_config_error_at_load(tmp_path, monkeypatch, capsys,
                                                                           family, metric):
    """A misspelt metric, or one of another kind of model, could never pass: refused before any job runs."""
    entry = {**COMMON, "family": family, "gates": {"demo": {metric: {"max": 1.0}}}}
    if family == "generator":
        entry = {k: v for k, v in entry.items() if k not in ("label", "n_estimators")} | {"targets": ["x1"],
                                                                                       "features": ["p", "eta"]}
    scratch_repo(tmp_path, {"m": entry})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"models/m/gates/demo/{re.escape(metric)}: family {family} never writes"):
        expand_params(load_params())
    assert cli.main(["train", "m"]) == 2
    assert "never writes" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
    assert known_metric("pid_eff.RichDLLk_gt_0.max_abs_diff", FAMILIES["pid_generator"].metrics)
    assert not known_metric("pid_eff.chi2_ndf", FAMILIES["generator"].metrics)


def test_classifier_without_oracle_passes_held_out_gates_and_fails_them_when_blind(tmp_path, monkeypatch):
    """A real-data configuration (no oracle): the default gates are computed and decide."""
    scratch_repo(tmp_path, {"clf": {**COMMON, "gates": {"demo": HELD_OUT}},
                            "blind": {**COMMON, "features": ["x1"], "gates": {"demo": {"auc": {"min": 0.7}}}}})
    write_synthetic(tmp_path, "synth", n=8000)
    monkeypatch.chdir(tmp_path)
    for name in ("clf", "blind"):
        assert cli.main(["train", name]) == 0 and cli.main(["export", name]) == 0
    assert cli.main(["validate", "clf"]) == 0
    m = json.loads((tmp_path / "reports" / "clf" / "metrics.json").read_text())["metrics"]
    assert set(CLASSIFIER_METRICS) <= set(m) and not any(needs_truth(k) for k in m)
    assert cli.main(["validate", "blind"]) == 3  # x1 alone does not reach the AUC gate


def test_train_drops_nan_rows_within_prepare_tolerance_and_names_root_files(tmp_path, monkeypatch):
    scratch_repo(tmp_path, {"clf": {**COMMON, "gates": {"demo": HELD_OUT}}})
    write_synthetic(tmp_path, "synth", n=4000)
    train = tmp_path / "results" / "prepared" / "synth" / "train.parquet"
    table = pq.read_table(train)
    meta = {b"flashsim": json.dumps({"files": ["/data/PIDCalib_1.root"], "tree": "Dir/DecayTree",
                                     "branches": {"x1": "probe_x1"}}).encode()}

    def write_with_nan(fraction: float) -> None:
        x1 = table["x1"].to_numpy().copy()
        x1[: int(fraction * len(x1))] = np.nan
        t = table.set_column(table.schema.get_field_index("x1"), "x1", pa.array(x1)).replace_schema_metadata(meta)
        pq.write_table(t, train)

    monkeypatch.chdir(tmp_path)
    write_with_nan(0.01)  # within prepare.max_nonfinite_fraction (0.02): the rows are dropped
    fam = get_family("clf", load_params())
    df = fam.frame("train")
    assert len(df) == table.num_rows - int(0.01 * table.num_rows) and np.isfinite(df["x1"]).all()
    write_with_nan(0.05)  # above it: one error naming the ROOT sources
    with pytest.raises(Exception) as err:
        fam.frame("train")
    text = str(err.value)
    assert "file '/data/PIDCalib_1.root', tree 'Dir/DecayTree', branch 'probe_x1'" in text
    assert "prepare.max_nonfinite_fraction = 0.02" in text and str(train) in text
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["prepare"] = {"max_nonfinite_fraction": 0.1}  # one tolerance: prepare's setting moves train's too
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert len(get_family("clf", load_params()).frame("train")) == table.num_rows - int(0.05 * table.num_rows)
