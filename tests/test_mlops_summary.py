"""flashsim summarize: the DVC metrics file and plot tables over all validated models."""

from __future__ import annotations

import csv
import json
import math

from flashsim.mlops.summary import gate_margin, summarize


def test_gate_margin_signs():
    assert gate_margin({"metric": "auc", "value": 0.55, "max": 0.6}) == (0.6 - 0.55) / 0.6
    assert gate_margin({"metric": "eff", "value": 0.8, "min": 0.9}) < 0
    assert gate_margin({"metric": "x", "value": 0.5, "min": 0.0, "max": 1.0}) == 0.5
    assert gate_margin({"metric": "x", "value": None, "max": 1.0}) == -math.inf


def test_summarize_writes_metrics_summary_and_histories(tmp_path):
    reports, train = tmp_path / "reports", tmp_path / "results" / "train"
    for name, auc, passed in (("resolution", 0.55, True), ("acceptance", 0.75, False)):
        (reports / name).mkdir(parents=True)
        gates = [{"metric": "two_sample_auc", "value": auc, "max": 0.7, "passed": passed}]
        (reports / name / "metrics.json").write_text(json.dumps(
            {"model": name, "family": "f", "metrics": {"two_sample_auc": auc, "rows": 10, "bad": float("nan")},
             "gates": gates, "passed": passed}))
    (train / "resolution").mkdir(parents=True)
    (train / "resolution" / "trained.json").write_text(json.dumps(
        {"history": [{"epoch": 0, "val_loss": 2.0, "loss": 3.0}, {"epoch": 1, "val_loss": 1.0}]}))
    out = summarize(reports, train)
    saved = json.loads((reports / "metrics.json").read_text())
    assert saved == out and list(saved) == ["acceptance", "resolution"]
    assert saved["resolution"] == {"two_sample_auc": 0.55, "rows": 10.0, "passed": True,
                                   "worst_gate_margin": (0.7 - 0.55) / 0.7}
    assert saved["acceptance"]["passed"] is False and saved["acceptance"]["worst_gate_margin"] < 0
    rows = list(csv.DictReader((reports / "summary.csv").open()))
    assert [r["model"] for r in rows] == ["acceptance", "resolution"] and rows[1]["passed"] == "1"
    hist = list(csv.DictReader((reports / "training" / "resolution.csv").open()))
    assert hist == [{"epoch": "0", "loss": "3.0", "val_loss": "2.0"}, {"epoch": "1", "loss": "", "val_loss": "1.0"}]
    assert not (reports / "training" / "acceptance.csv").exists()
