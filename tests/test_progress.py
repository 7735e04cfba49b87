"""Progress in batch logs: with stderr redirected to a file, trainings write one line per epoch (or per group of
boosting rounds) with the position, the losses, the validation metric, the time and the ETA."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import scratch_repo, write_synthetic

from flashsim.progress import Progress

SRC = Path(__file__).resolve().parents[1] / "src"
COMMON = {"sample": "synth", "features": ["p", "eta", "x1"], "bins": {"p": "p", "eta": "eta", "n_p": 3, "n_eta": 2},
          "validation_rows": 2000, "threads": 1, "label": "label"}
MODELS = {
    "clf_mlp": {**COMMON, "family": "mlp_classifier", "epochs": 3, "width": 8, "depth": 1, "batch_size": 512},
    "clf_gbdt": {**COMMON, "family": "lgbm_classifier", "n_estimators": 40},
}


def _train_to_log(root: Path, name: str) -> str:
    log = root / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "FLASHSIM_MLFLOW": "off"}
    with open(log, "w") as err:  # stderr is a file, as under Slurm or a Snakemake log: no terminal
        r = subprocess.run([sys.executable, "-m", "flashsim", "train", name], cwd=root, env=env, stderr=err,
                           stdout=subprocess.DEVNULL, timeout=600)
    text = log.read_text()
    assert r.returncode == 0, text
    return text


def test_training_writes_one_line_per_epoch(tmp_path):
    root = scratch_repo(tmp_path, MODELS)
    write_synthetic(root, "synth", n=3000, seed=3)
    text = _train_to_log(root, "clf_mlp")
    lines = [ln for ln in text.splitlines() if re.search(r"clf_mlp: epoch \d+/3 ", ln)]
    assert [re.search(r"epoch (\d+)/3", ln).group(1) for ln in lines] == ["1", "2", "3"], text
    pattern = (r"epoch \d/3 loss=[-\d.e]+ val_loss=[-\d.e]+ val_accuracy=[\d.e-]+ .*\| [\d.]+ s/epoch, "
               r"[\d.]+ s elapsed, ETA [\d.]+ s$")
    assert all(re.search(pattern, ln) for ln in lines), lines
    assert lines[-1].endswith("ETA 0.0 s")
    assert "\r" not in text and "it/s" not in text  # no tqdm bar in a log file

    text = _train_to_log(root, "clf_gbdt")
    lines = [ln for ln in text.splitlines() if "clf_gbdt: " in ln and " rounds" in ln]
    assert len(lines) == 20, text  # every 2 of 40 rounds
    last = r"clf_gbdt: 40/40 rounds \(100%\) val_binary_logloss=[\d.e-]+ \| .*ETA 0\.0 s$"
    assert re.search(last, lines[-1]), lines[-1]


def test_progress_lines_for_chunks(caplog):
    caplog.set_level("INFO", logger="flashsim.progress")
    with Progress(1000, "prepare synth", unit="entries", lines=True) as bar:
        bar.update(400)
        bar.update(600)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert msgs[0].startswith("prepare synth: 400/1,000 entries (40%) | ")
    assert "ETA" in msgs[0] and msgs[1].endswith("ETA 0.0 s")
