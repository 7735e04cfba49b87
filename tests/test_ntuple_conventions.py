"""Real-ntuple conventions at ingestion: LHCb undefined-value sentinels, physical ranges, corrupted uncompressed
baskets, RNTuple and trees in folders, and root:// servers that do not answer."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
import yaml
from synthetic import make_columns, write_root, write_sample
from test_prepare import N, assert_refused, make_params, ok, prepare

from flashsim.io.contract import LHCB_SENTINELS, PROBABILITY, SAMPLES
from flashsim.prepare import SPLITS

PROBE = "probe_Brunel_"
MUON_LL = f"{PROBE}MuonMuLL"


def _with_prepare(params: Path, **settings) -> Path:
    """``params`` with ``prepare`` settings changed."""
    cfg = yaml.safe_load(params.read_text())
    cfg["prepare"].update(settings)
    params.write_text(yaml.safe_dump(cfg))
    return params


def _merged(outdir: Path, column: str) -> np.ndarray:
    return np.concatenate([pq.read_table(outdir / f"{s}.parquet")[column].to_numpy() for s in SPLITS])


def _with_sentinels(cols):
    """PIDCalib style: -1000 where the muon LLs are undefined, -999 in a few RICH DLLs."""
    undefined = cols[f"{PROBE}isMuon"] == 0
    for name in (MUON_LL, f"{PROBE}MuonBgLL"):
        cols[name][undefined] = -1000.0
    cols[f"{PROBE}RichDLLk"][::100] = -999.0


# ------------------------------------------------------------------------------------------------ sentinels
def test_sentinels_become_nan_and_are_counted(tmp_path, capsys, caplog):
    src = write_sample(tmp_path / "calib.root", "pid_calib", N, seed=2, modify=_with_sentinels)
    with uproot.open(src) as f:
        raw = f["DecayTree"].arrays([MUON_LL, f"{PROBE}RichDLLk", f"{PROBE}isMuon"], library="np")
    n_mu = int(np.sum(raw[MUON_LL] == -1000.0))
    n_dll = int(np.sum(raw[f"{PROBE}RichDLLk"] == -999.0))
    assert n_mu > 100 and n_dll > 10
    with caplog.at_level(logging.INFO, logger="flashsim.io.readers"):
        ok(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "out", capsys)
    mu = _merged(tmp_path / "out", MUON_LL)
    assert not np.isin(mu, LHCB_SENTINELS).any()
    assert int(np.isnan(mu).sum()) == n_mu
    assert int(np.isnan(_merged(tmp_path / "out", f"{PROBE}RichDLLk")).sum()) == n_dll
    logged = caplog.text
    assert f"branch {MUON_LL}: {n_mu} undefined values (-1000, -999, -9999) mapped to NaN" in logged
    assert f"branch {PROBE}RichDLLk: {n_dll} undefined values" in logged


def test_sentinels_are_overridden_per_input(tmp_path, capsys):
    """An input whose files use -5 as 'undefined' for one branch: the override maps -5 (and only it)."""
    def minus_five(cols):
        cols[MUON_LL][cols[f"{PROBE}isMuon"] == 0] = -5.0

    src = write_sample(tmp_path / "calib.root", "pid_calib", N, seed=2, modify=minus_five)
    params = make_params(tmp_path, [src], kind="pid_calib", sentinels={MUON_LL: [-5.0]})
    ok(params, tmp_path / "out", capsys)
    mu = _merged(tmp_path / "out", MUON_LL)
    assert not (mu == -5.0).any() and np.isnan(mu).any()
    # [] turns the contract's sentinels off: -1000 is then a value, which the file is refused for
    src2 = write_sample(tmp_path / "calib2.root", "pid_calib", N, seed=2, modify=_with_sentinels)
    rc, err = prepare(make_params(tmp_path, [src2], kind="pid_calib", sentinels={MUON_LL: []}),
                      tmp_path / "out2", capsys)
    assert_refused(rc, err, tmp_path / "out2", src2, "DecayTree", MUON_LL, "no sentinel is configured")


def test_sentinel_in_a_branch_without_sentinels_is_refused(tmp_path, capsys):
    def eta_sentinel(cols):
        cols[f"{PROBE}ETA"][::50] = -1000.0

    src = write_sample(tmp_path / "calib.root", "pid_calib", N, seed=2, modify=eta_sentinel)
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "DecayTree", f"{PROBE}ETA",
                   "equal an LHCb undefined-value sentinel")
    assert "inputs.s.sentinels" in err


def test_sentinels_of_an_integer_branch_are_a_config_error(tmp_path, capsys):
    src = write_sample(tmp_path / "calib.root", "pid_calib", 1000)
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib", sentinels={f"{PROBE}isMuon": [-1]}),
                      tmp_path / "out", capsys)
    assert rc == 2 and "inputs.s.sentinels" in err and "integer branch" in err


# ------------------------------------------------------------------------------------------------ ranges
def test_out_of_range_values_are_refused_with_the_range_and_count(tmp_path, capsys):
    name = f"{PROBE}MC15TuneV1_ProbNNk"

    def probnn_100(cols):
        cols[name][::40] = 100.0

    src = write_sample(tmp_path / "calib.root", "pid_calib", N, seed=2, modify=probnn_100)
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "out", capsys)
    n = len(range(0, N, 40))
    assert_refused(rc, err, tmp_path / "out", src, "DecayTree", name,
                   f"{n} of {N} values ({n / N:.3%}) outside the physical range {PROBABILITY}")
    assert "prepare.max_out_of_range_fraction = 0.001" in err


def test_out_of_range_within_the_fraction_is_reported_and_set_to_nan(tmp_path, capsys, caplog):
    name = f"{PROBE}P"

    def three_negative(cols):
        cols[name][[5, 7, 9]] = -3.0

    src = write_sample(tmp_path / "calib.root", "pid_calib", N, seed=2, modify=three_negative)
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "refused", capsys)
    assert_refused(rc, err, tmp_path / "refused", src, "DecayTree", name, "outside the physical range")
    params = _with_prepare(make_params(tmp_path, [src], kind="pid_calib"), max_out_of_range_fraction=0.01)
    with caplog.at_level(logging.WARNING, logger="flashsim.io.readers"):
        ok(params, tmp_path / "out", capsys)
    assert f"branch {name}: 3 of {N} values" in caplog.text and "set to NaN" in caplog.text
    p = _merged(tmp_path / "out", name)
    assert int(np.isnan(p).sum()) == 3 and (p[np.isfinite(p)] > 0).all()


def test_out_of_range_weights_are_refused(tmp_path, capsys):
    def huge_weight(cols):
        cols["probe_sWeight"][11] = 1e307

    src = write_sample(tmp_path / "calib.root", "pid_calib", N, seed=2, modify=huge_weight)
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "DecayTree", "probe_sWeight", "weights must all lie in it")


def test_random_bytes_in_an_uncompressed_file_are_refused(tmp_path, capsys):
    """4 KiB of random bytes in the middle of a file whose baskets are stored uncompressed (no checksum)."""
    cols = make_columns("pid_calib", 20000, seed=9)
    src = tmp_path / "calib.root"
    with uproot.recreate(src, compression=None) as f:
        f.mktree("DecayTree", {k: v.dtype for k, v in cols.items()})
        f["DecayTree"].extend(cols)
    ok(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "good", capsys)  # intact, it passes
    raw = bytearray(src.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4096] = np.random.default_rng(1).bytes(4096)
    src.write_bytes(bytes(raw))
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "DecayTree", None, "branch '")
    assert "outside the physical range" in err or "NaN or inf" in err or "corrupt" in err


# ------------------------------------------------------------------------------------------------ RNTuple
@pytest.mark.parametrize("layout", ["ttree_in_folder", "rntuple", "rntuple_in_folder"])
def test_rntuple_and_trees_in_folders(layout, tmp_path, capsys):
    """The same columns as a TTree in a folder, an RNTuple and an RNTuple in a folder prepare identically."""
    cols = make_columns("pid_calib", N, seed=5)
    ref = write_root(tmp_path / "ref.root", cols, "DecayTree")
    expected = ok(make_params(tmp_path, [ref], kind="pid_calib"), tmp_path / "ref", capsys)
    tree = "Tuple/DecayTree" if layout.endswith("folder") else "DecayTree"
    src = tmp_path / "calib.root"
    if layout == "ttree_in_folder":
        write_root(src, cols, tree)
    else:
        with uproot.recreate(src) as f:
            f[tree] = cols  # uproot >= 5.7 writes an RNTuple for a plain dict
        with uproot.open(src) as f:
            assert f.classnames()[f"{tree};1"] == "ROOT::RNTuple"
    got = ok(make_params(tmp_path, [src], kind="pid_calib", tree=tree), tmp_path / "out", capsys)
    total = sum(t.num_rows for t in got.values())
    assert total == sum(t.num_rows for t in expected.values()) == N
    for name in SAMPLES["pid_calib"].names():
        a = np.sort(np.concatenate([got[s][name].to_numpy() for s in SPLITS]).astype(np.float64))
        b = np.sort(np.concatenate([expected[s][name].to_numpy() for s in SPLITS]).astype(np.float64))
        np.testing.assert_array_equal(a, b)


def test_rntuple_missing_field_and_wrong_type(tmp_path, capsys):
    cols = make_columns("pid_calib", 1000, seed=5)
    cols[f"{PROBE}isMuon"] = cols[f"{PROBE}isMuon"].astype(np.float32)
    del cols["mother_M"]
    src = tmp_path / "calib.root"
    with uproot.recreate(src) as f:
        f["DecayTree"] = cols
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "DecayTree", f"{PROBE}isMuon", "wrong dtype")
    cols[f"{PROBE}isMuon"] = cols[f"{PROBE}isMuon"].astype(np.int32)
    with uproot.recreate(src) as f:
        f["DecayTree"] = cols
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "DecayTree", "mother_M", "missing branch")


# ------------------------------------------------------------------------------------------------ root://
def _timeout_params(tmp_path: Path, url: str, seconds: float) -> Path:
    return _with_prepare(make_params(tmp_path, [url], kind="pid_calib"), xrootd_timeout=seconds)


def test_xrootd_port_where_nothing_listens(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"root://127.0.0.1:{port}//data/calib.root"
    t0 = time.monotonic()
    rc, err = prepare(_timeout_params(tmp_path, url, 3), tmp_path / "out", capsys)
    assert time.monotonic() - t0 < 60  # not the client's default ten minutes
    assert_refused(rc, err, tmp_path / "out", url, "DecayTree", None, "the XRootD server did not answer within 3 s")


def test_xrootd_server_that_accepts_but_never_answers(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"root://127.0.0.1:{s.getsockname()[1]}//data/calib.root"
        t0 = time.monotonic()
        rc, err = prepare(_timeout_params(tmp_path, url, 2), tmp_path / "out", capsys)
        assert time.monotonic() - t0 < 60
    assert_refused(rc, err, tmp_path / "out", url, "DecayTree", None, "the XRootD server did not answer within 2 s")
