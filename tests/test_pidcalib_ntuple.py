"""A PIDCalib/DecayTreeTuple-style K sample written by other software (uproot), pointed at the workflow through
``params.yaml`` only: trees in a folder (one file a TTree, one an RNTuple), ``eventNumber`` for ``evtNumber``,
DecayTreeTuple names mapped, -1000 where a quantity is undefined. prepare -> the four PID stages and their chained
pipeline train, export and pass the demo gates of params.yaml, with no code change."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
import yaml
from helpers import scratch_repo
from test_pid_models import pid_models

from flashsim import cli
from flashsim.detsim import calib
from flashsim.models.pid import common as pc
from flashsim.seeding import rng_factory

ROOT = Path(__file__).resolve().parents[1]
SPECIES = "K"
N = 40000  # candidates (two files), ~24k training rows
TREE = "DSt_KPTuple/DecayTree"
# contract name -> the DecayTreeTuple name in the files
NAMES = {"evtNumber": "eventNumber", "nTracks_Brunel": "nTracks", "mother_M": "Dst_D0_M",
         "probe_sWeight": "nsig_sw"}
STAGES = [f"pid_{m}_{SPECIES}" for m in ("ismuon", "rich", "muon", "global")]


def write_pidcalib(directory: Path) -> tuple[list[Path], int, int]:
    """The reference simulation's calib_K candidates as two PIDCalib-style files (returns the files and the
    number of -1000 written in MuonMuLL and RichDLLk)."""
    parts = list(calib.chunks(N, N, rng_factory(11, "calib_K"), {"channel": "dstar_d0pi_K"}))
    cols = {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}
    cols.pop("is_signal", None)  # real data has no truth
    for m in pc.MUON:  # DecayTreeTuple writes -1000 where the muon LLs do not exist
        cols[m] = np.where(np.isfinite(cols[m]), cols[m], np.float32(-1000.0)).astype(np.float32)
    no_rich = np.random.default_rng(5).uniform(size=N) < 0.005  # a few tracks without RICH information
    for c in pc.RICH:
        cols[c][no_rich] = -1000.0
    cols = {NAMES.get(k, k): v for k, v in cols.items()}
    half = N // 2
    files = []
    for i, kind in enumerate(("ttree", "rntuple")):
        part = {k: v[i * half:(i + 1) * half] for k, v in cols.items()}
        path = directory / f"PIDCalib_K_{kind}.root"
        with uproot.recreate(path) as f:
            if kind == "ttree":
                f.mktree(TREE, {k: v.dtype for k, v in part.items()})
                f[TREE].extend(part)
            else:
                f[TREE] = part  # uproot >= 5.7: an RNTuple
        files.append(path)
    return files, int(np.sum(cols[pc.MUON[0]] == -1000.0)), int(no_rich.sum())


@pytest.mark.slow
def test_pidcalib_style_ntuple_trains_the_pid_stack_through_configuration(tmp_path, monkeypatch, caplog):
    raw = tmp_path / "ntuples"
    raw.mkdir()
    files, n_muon, n_rich = write_pidcalib(raw)
    with uproot.open(files[1]) as f:
        assert f.classnames()[f"{TREE};1"] == "ROOT::RNTuple"
    models = pid_models(ROOT, SPECIES)
    inputs = {"calib_K": {"kind": "pid_calib", "files": [str(raw / "PIDCalib_K_*.root")], "tree": TREE,
                          "branches": NAMES}}
    scratch_repo(tmp_path, models, seed=20261122, inputs=inputs)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "prepared" / "calib_K"
    with caplog.at_level(logging.INFO, logger="flashsim.io.readers"):
        assert cli.main(["prepare", "calib_K", "--outdir", str(out)]) == 0
    mapped = [r.getMessage() for r in caplog.records if "undefined values" in r.getMessage()]
    assert sum(int(m.split(": ")[-1].split()[0]) for m in mapped if pc.MUON[0] in m) == n_muon
    assert sum(int(m.split(": ")[-1].split()[0]) for m in mapped if pc.RICH[2] in m) == n_rich
    train = pq.read_table(out / "train.parquet").to_pandas()
    assert not (train[pc.MUON + pc.RICH] == -1000.0).any().any()
    for name in STAGES:
        assert cli.main(["train", name]) == 0, name
        assert cli.main(["export", name]) == 0, name
    for name in STAGES:
        rc = cli.main(["validate", name])
        report = json.loads((tmp_path / "reports" / name / "metrics.json").read_text())
        assert rc == 0, (name, report["gates"])
        assert report["gates"] and all(g["passed"] for g in report["gates"]), name
    gates = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]["pid_ismuon"]["gates"]["demo"]
    assert set(gates) <= set(json.loads((tmp_path / "reports" / STAGES[0] / "metrics.json").read_text())[
        "metrics"])
