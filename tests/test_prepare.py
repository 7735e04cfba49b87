"""Ingestion: ``flashsim prepare`` on small synthetic ROOT files of every contract kind, the event split,
branch mapping, globs, root:// over a real XRootD server, and one test per kind of bad input."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
import yaml
from synthetic import write_sample

from flashsim.cli import main
from flashsim.io import readers
from flashsim.io.contract import SAMPLES
from flashsim.prepare import SPLITS, assign_split, file_salt

N = 2500  # entries per synthetic file


def make_params(tmp_path: Path, files: list[str], *, sample: str = "s", kind: str = "tracking",
                seed: int = 7, step_size: int = 1000, **entry) -> Path:
    """A params file with one input sample (its kind given in inputs, as for samples not generated here)."""
    params = {
        "scale": "demo", "seed": seed,
        "inputs": {sample: {"files": [str(f) for f in files], "kind": kind, **entry}},
        "prepare": {"split": {"train": 0.6, "val": 0.2, "test": 0.2}, "max_nonfinite_fraction": 0.02,
                    "step_size": step_size},
    }
    path = tmp_path / f"params-{sample}-{seed}-{step_size}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def prepare(params: Path, outdir: Path, capsys: pytest.CaptureFixture, sample: str = "s") -> tuple[int, str]:
    rc = main(["prepare", sample, "--outdir", str(outdir), "--params", str(params)])
    return rc, capsys.readouterr().err


def tables(outdir: Path) -> dict[str, object]:
    return {s: pq.read_table(outdir / f"{s}.parquet") for s in SPLITS}


def same(a, b) -> bool:
    """Two tables have the same schema (metadata aside) and values, NaN in the same places counting as equal."""
    assert a.schema.equals(b.schema, check_metadata=False)
    for name in a.column_names:
        x, y = a[name].combine_chunks(), b[name].combine_chunks()
        if hasattr(x, "offsets"):
            np.testing.assert_array_equal(x.offsets.to_numpy(), y.offsets.to_numpy())
            x, y = x.flatten(), y.flatten()
        np.testing.assert_array_equal(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False))
    return True


def ok(params: Path, outdir: Path, capsys: pytest.CaptureFixture, sample: str = "s") -> dict:
    rc, err = prepare(params, outdir, capsys, sample)
    assert rc == 0, err
    return tables(outdir)


# ------------------------------------------------------------------------------------------------ good input
@pytest.mark.parametrize("kind", list(SAMPLES))
def test_prepare_every_kind(kind, tmp_path, capsys):
    src = write_sample(tmp_path / f"{kind}.root", kind, N, seed=1)
    out = ok(make_params(tmp_path, [src], kind=kind), tmp_path / "out", capsys)
    contract = SAMPLES[kind]
    assert sum(t.num_rows for t in out.values()) == N
    for t in out.values():
        assert t.column_names == contract.names()  # contract order, optional truth branches kept
        for c in contract.columns:
            typ = t.schema.field(c.name).type
            if c.jagged:
                assert str(typ.value_type) == {"float32": "float", "int32": "int32"}[c.base_dtype]
            else:
                assert str(typ) == {"float32": "float", "float64": "double", "int32": "int32",
                                    "int64": "int64"}[c.dtype]
    # values survive unchanged (NaN where the contract allows it included)
    with uproot.open(src) as f:
        ref = f[contract.tree].arrays(library="ak")
    merged = {c.name: ak.concatenate([ak.from_arrow(out[s][c.name], highlevel=True) for s in SPLITS])
              for c in contract.columns}
    order = np.lexsort([ak.to_numpy(merged["evtNumber"])])
    for c in contract.columns:
        if c.jagged:
            got = ak.to_list(merged[c.name][order][:20])
            assert got == ak.to_list(ref[c.name][np.lexsort([ak.to_numpy(ref["evtNumber"])])][:20])
        else:
            a = np.sort(ak.to_numpy(merged[c.name]).astype(np.float64))
            b = np.sort(ak.to_numpy(ref[c.name]).astype(np.float64))
            np.testing.assert_array_equal(a, b)
    if contract.weight:
        assert (ak.to_numpy(merged[contract.weight]) < 0).any()  # negative sWeights are legal


def test_split_by_event_disjoint_deterministic_and_fractions(tmp_path, capsys):
    src = write_sample(tmp_path / "t.root", "tracking", 12000, seed=2)
    a = ok(make_params(tmp_path, [src], step_size=1000), tmp_path / "a", capsys)
    b = ok(make_params(tmp_path, [src], step_size=7000), tmp_path / "b", capsys)  # other chunking
    c = ok(make_params(tmp_path, [src], seed=8), tmp_path / "c", capsys)  # other seed
    events = {s: set(a[s]["evtNumber"].to_numpy()) for s in SPLITS}
    assert not events["train"] & events["val"] and not events["train"] & events["test"]
    assert not events["val"] & events["test"]
    n_events = sum(len(e) for e in events.values())
    for s, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs(len(events[s]) / n_events - frac) < 0.03
        assert same(a[s], b[s])  # independent of the chunking
    assert set(c["train"]["evtNumber"].to_numpy()) != events["train"]


def test_split_depends_on_file_name_not_location():
    evt = np.arange(10000)
    bounds = np.array([0.6, 0.8])
    s1 = assign_split(evt, file_salt(1, "/data/a.root"), bounds)
    assert np.array_equal(s1, assign_split(evt, file_salt(1, "root://host:1094//eos/x/a.root"), bounds))
    assert not np.array_equal(s1, assign_split(evt, file_salt(1, "/data/b.root"), bounds))
    assert not np.array_equal(s1, assign_split(evt, file_salt(2, "/data/a.root"), bounds))


def test_prepared_files_carry_metadata(tmp_path, capsys):
    src = write_sample(tmp_path / "t.root", "ghost", 1500)
    out = ok(make_params(tmp_path, [src], kind="ghost"), tmp_path / "o", capsys)
    meta = yaml.safe_load(out["val"].schema.metadata[b"flashsim"])
    assert meta["kind"] == "ghost" and meta["files"] == [str(src)] and meta["split_name"] == "val"
    assert meta["seed"] == 7


def test_branch_and_tree_mapping(tmp_path, capsys):
    rename = {"mother_M": "Jpsi_M", "probe_sWeight": "sw", "nTracks_Brunel": "nTracks"}
    src = write_sample(tmp_path / "calib.root", "pid_calib", N, tree="TagProbe", rename=rename)
    params = make_params(tmp_path, [src], sample="calib_mu", kind="pid_calib", tree="TagProbe", branches=rename)
    out = ok(params, tmp_path / "out", capsys, sample="calib_mu")
    assert out["train"].column_names == SAMPLES["pid_calib"].names()
    with uproot.open(src) as f:
        ref = f["TagProbe"]["Jpsi_M"].array(library="np")
    got = np.concatenate([out[s]["mother_M"].to_numpy() for s in SPLITS])
    np.testing.assert_array_equal(np.sort(got), np.sort(ref))
    # the same file without the mapping: the contract name is missing, and the message points to the mapping
    rc, err = prepare(make_params(tmp_path, [src], sample="calib_mu", kind="pid_calib", tree="TagProbe",
                                  branches={k: v for k, v in rename.items() if k != "mother_M"}),
                      tmp_path / "bad", capsys, sample="calib_mu")
    assert rc != 0 and f"file '{src}'" in err and "tree 'TagProbe'" in err and "branch 'mother_M'" in err
    assert "inputs.calib_mu.branches" in err
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_mapping_of_unknown_contract_branch_is_a_config_error(tmp_path, capsys):
    src = write_sample(tmp_path / "t.root", "tracking", 1000)
    rc, err = prepare(make_params(tmp_path, [src], branches={"pp": "P"}), tmp_path / "o", capsys)
    assert rc != 0 and "inputs.s.branches" in err and "'pp'" in err and "did you mean 'p'" in err


def test_globs_merge_files_and_split_per_file(tmp_path, capsys):
    files = [write_sample(tmp_path / "in" / f"run_{i}.root", "tracking", 1500, seed=10 + i) for i in range(3)]
    merged = ok(make_params(tmp_path, [str(tmp_path / "in" / "run_*.root"), str(files[1])]), tmp_path / "m",
                capsys)  # files[1] matched twice: read once
    assert sum(t.num_rows for t in merged.values()) == 3 * 1500
    meta = yaml.safe_load(merged["train"].schema.metadata[b"flashsim"])
    assert meta["files"] == [str(f) for f in files]
    alone = [ok(make_params(tmp_path, [f]), tmp_path / f"one{i}", capsys) for i, f in enumerate(files)]
    for s in SPLITS:  # a file splits the same alone or among others
        assert sorted(merged[s]["mc_px"].to_pylist()) == sorted(x for t in alone for x in t[s]["mc_px"].to_pylist())


def test_nan_below_the_fraction_is_accepted(tmp_path, capsys):
    def few_nans(cols):
        cols["mc_px"][::200] = np.nan  # 0.5 % < 2 %

    src = write_sample(tmp_path / "t.root", "tracking", N, modify=few_nans)
    out = ok(make_params(tmp_path, [src]), tmp_path / "o", capsys)
    assert sum(np.isnan(t["mc_px"].to_numpy()).sum() for t in out.values()) == len(range(0, N, 200))


def test_defined_where_table_matches_contract_docs():
    """Every float branch documented as "NaN if ..." has a rule, and every rule names a float branch."""
    for kind, sample in SAMPLES.items():
        rules = readers.DEFINED_WHERE[kind]
        for c in sample.columns:
            if "NaN if" in c.doc:
                assert c.name in rules, (kind, c.name)
        for name, gates in rules.items():
            assert sample.column(name).base_dtype.startswith("float")
            assert all(sample.column(g).base_dtype.startswith("int") for g in gates)


# ------------------------------------------------------------------------------------------------ bad input
def _set(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], None]:
    def modify(cols: dict) -> None:
        cols[name] = fn(cols[name])
    return modify


def _nan_every(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def fn(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[::k] = np.nan
        return a
    return fn


def _corrupt_basket(path: Path, tree: str, branch: str) -> None:
    """Scramble the compressed payload of ``branch``'s first basket."""
    with uproot.open(path) as f:
        b = f[tree][branch]
        seek = int(b.member("fBasketSeek")[0])
    raw = bytearray(path.read_bytes())
    for i in range(seek + 100, seek + 300):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def _drop(name):
    return lambda cols: cols.pop(name)


def _reco_nan(cols):  # NaN in p also where the track was reconstructed
    cols["p"][::10] = np.nan


def _inf_feature(cols):
    cols["pt"][::8] = np.inf


def _flat_photon_energy(cols):
    cols["photon_E"] = np.ones(len(cols["evtNumber"]), dtype=np.float32)


def _misaligned(cols):
    counts = ak.num(cols["photon_y"])
    cols["photon_y"] = ak.unflatten(np.ones(int(ak.sum(counts + 1)), dtype=np.float32), counts + 1)


def _zero_weights(cols):
    cols["probe_sWeight"][:] = 0.0


def _zero_sum_weights(cols):
    cols["probe_sWeight"][:] = np.tile([1.5, -1.5], len(cols["probe_sWeight"]) // 2)


def _nan_weight(cols):
    cols["probe_sWeight"][17] = np.nan


# id: (kind, modify, write options, message fragments; the branch is asserted when given)
BAD_DATA = {
    "missing_branch": ("tracking", _drop("mc_pz"), {}, "mc_pz", "missing branch"),
    "wrong_dtype_float_for_int": ("tracking", _set("nTracks", lambda a: a.astype(np.float32)), {}, "nTracks",
                                  "wrong dtype"),
    "wrong_dtype_flat_for_jagged": ("ecal", _flat_photon_energy, {}, "photon_E", "wrong dtype"),
    "int_overflow": ("tracking", _set("nPVs", lambda a: a.astype(np.int64) + 2**40), {}, "nPVs", "overflow"),
    "misaligned_lists": ("ecal", _misaligned, {"loose": ("photon_y",)}, "photon_y", "list lengths"),
    "nan_above_fraction": ("tracking", _set("mc_px", _nan_every(20)), {}, "mc_px", "NaN or inf"),
    "nan_where_reconstructed": ("tracking", _reco_nan, {}, "p", "where type != 0"),
    "inf_above_fraction": ("ghost", _inf_feature, {}, "pt", "NaN or inf"),
    "all_zero_weights": ("pid_calib", _zero_weights, {}, "probe_sWeight", "all"),
    "zero_sum_weights": ("pid_calib", _zero_sum_weights, {}, "probe_sWeight", "sum to"),
    "nonfinite_weights": ("pid_calib", _nan_weight, {}, "probe_sWeight", "1 of"),
}


def assert_refused(rc: int, err: str, outdir: Path, file: Path | str, tree: str | None, branch: str | None,
                   phrase: str) -> None:
    assert rc != 0
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and lines[0].startswith("flashsim prepare: error:"), err  # one clear line
    assert "Traceback" not in err
    assert f"file '{file}'" in err
    if tree:
        assert f"tree '{tree}'" in err
    if branch:
        assert f"branch '{branch}'" in err
    assert phrase in err
    leftovers = list(outdir.rglob("*")) if outdir.exists() else []
    assert leftovers == [], leftovers  # no partial output, no temporary file


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused(case, tmp_path, capsys):
    kind, modify, opts, branch, phrase = BAD_DATA[case]
    good = write_sample(tmp_path / "a_good.root", kind, N, seed=3)  # read (and partly written) first
    bad = write_sample(tmp_path / "b_bad.root", kind, N, seed=4, modify=modify, **opts)
    rc, err = prepare(make_params(tmp_path, [good, bad], kind=kind), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", bad, SAMPLES[kind].tree, branch, phrase)


def test_mapped_weight_branch_is_named_as_in_the_file(tmp_path, capsys):
    src = write_sample(tmp_path / "c.root", "pid_calib", N, modify=_zero_weights, rename={"probe_sWeight": "sw"})
    rc, err = prepare(make_params(tmp_path, [src], kind="pid_calib", branches={"probe_sWeight": "sw"}),
                      tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "DecayTree", "sw", "contract branch 'probe_sWeight'")


def test_empty_tree(tmp_path, capsys):
    src = write_sample(tmp_path / "e.root", "tracking", 0)
    rc, err = prepare(make_params(tmp_path, [src]), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "Tracking", None, "empty")


def test_missing_tree(tmp_path, capsys):
    src = write_sample(tmp_path / "t.root", "tracking", 1000)
    rc, err = prepare(make_params(tmp_path, [src], tree="Trackz"), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "Trackz", None, "the file has 'Tracking'")


def test_corrupt_basket(tmp_path, capsys):
    good = write_sample(tmp_path / "a.root", "tracking", N)
    bad = write_sample(tmp_path / "b.root", "tracking", N, seed=5)
    _corrupt_basket(bad, "Tracking", "chi2PerDoF")
    rc, err = prepare(make_params(tmp_path, [good, bad]), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", bad, "Tracking", "chi2PerDoF", "corrupt")


def test_not_a_root_file(tmp_path, capsys):
    src = tmp_path / "junk.root"
    src.write_text("evtNumber,p\n1,2\n")
    rc, err = prepare(make_params(tmp_path, [src]), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "Tracking", None, "not a ROOT file")


def test_truncated_file(tmp_path, capsys):
    src = write_sample(tmp_path / "t.root", "tracking", N)
    raw = src.read_bytes()
    src.write_bytes(raw[: int(len(raw) * 0.7)])
    rc, err = prepare(make_params(tmp_path, [src]), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", src, "Tracking", None, "truncated")


def test_missing_file_and_empty_glob(tmp_path, capsys):
    missing = tmp_path / "nope.root"
    rc, err = prepare(make_params(tmp_path, [missing]), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", missing, None, None, "does not exist")
    pattern = str(tmp_path / "none_*.root")
    rc, err = prepare(make_params(tmp_path, [pattern]), tmp_path / "out", capsys)
    assert_refused(rc, err, tmp_path / "out", pattern, None, None, "no file matches")


def test_failure_keeps_previous_outputs_intact(tmp_path, capsys):
    src = write_sample(tmp_path / "t.root", "tracking", 1000)
    before = ok(make_params(tmp_path, [src]), tmp_path / "out", capsys)
    bad = write_sample(tmp_path / "u.root", "tracking", 1000, modify=_drop("p"))
    rc, _ = prepare(make_params(tmp_path, [src, bad]), tmp_path / "out", capsys)
    assert rc != 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{s}.parquet" for s in sorted(SPLITS)]
    assert all(same(tables(tmp_path / "out")[s], before[s]) for s in SPLITS)


# ------------------------------------------------------------------------------------------------ root://
def test_prepare_over_xrootd(xrootd, tmp_path, capsys):
    """The same files read from a real XRootD server (root:// glob) and locally give identical outputs."""
    remote_dir = xrootd.root / "eos" / "lhcb" / f"calib-{tmp_path.name}"
    local = [write_sample(tmp_path / f"calib_{i}.root", "pid_calib", N, seed=20 + i) for i in range(2)]
    remote_dir.mkdir(parents=True)
    for f in local:
        shutil.copy(f, remote_dir / f.name)
    rel = remote_dir.relative_to(xrootd.root)
    url_glob = f"{xrootd.url}/{rel}/calib_*.root"
    out_remote = ok(make_params(tmp_path, [url_glob], kind="pid_calib", step_size=1000), tmp_path / "r", capsys)
    out_local = ok(make_params(tmp_path, [str(f) for f in local], kind="pid_calib"), tmp_path / "l", capsys)
    for s in SPLITS:
        assert out_remote[s].num_rows > 0
        assert same(out_remote[s], out_local[s])
    meta = yaml.safe_load(out_remote["test"].schema.metadata[b"flashsim"])
    assert all(f.startswith("root://127.0.0.1:") for f in meta["files"]) and len(meta["files"]) == 2
    # a truncated remote file is refused with the URL named
    raw = (remote_dir / local[0].name).read_bytes()
    (remote_dir / "cut.root").write_bytes(raw[: len(raw) // 2])
    url = f"{xrootd.url}/{rel}/cut.root"
    rc, err = prepare(make_params(tmp_path, [url], kind="pid_calib"), tmp_path / "x", capsys)
    assert_refused(rc, err, tmp_path / "x", url, "DecayTree", None, "truncated")
    # so are a missing remote file and a remote glob without matches
    for url, phrase in ((f"{xrootd.url}/{rel}/gone.root", "does not exist"),
                        (f"{xrootd.url}/{rel}/none_*.root", "no file matches")):
        rc, err = prepare(make_params(tmp_path, [url], kind="pid_calib"), tmp_path / "x", capsys)
        assert_refused(rc, err, tmp_path / "x", url, "DecayTree", None, phrase)


def test_castable_types_are_converted_to_the_contract(tmp_path, capsys):
    """int64 -> int32, bool -> int32 and float64 -> float32 are accepted and cast; the weight stays float64."""
    def widen(cols):
        cols["nTracks_Brunel"] = cols["nTracks_Brunel"].astype(np.int64)
        cols["probe_Brunel_isMuon"] = cols["probe_Brunel_isMuon"].astype(bool)
        cols["probe_Brunel_P"] = cols["probe_Brunel_P"].astype(np.float64)
        cols["probe_sWeight"] = cols["probe_sWeight"].astype(np.float32)

    src = write_sample(tmp_path / "w.root", "pid_calib", N, modify=widen)
    out = ok(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "o", capsys)
    schema = out["train"].schema
    assert [str(schema.field(c).type) for c in ("nTracks_Brunel", "probe_Brunel_isMuon", "probe_Brunel_P",
                                                 "probe_sWeight")] == ["int32", "int32", "float", "double"]
    params = yaml.safe_load(make_params(tmp_path, [src], kind="pid_calib").read_text())
    whole = readers.read_sample(params, "s")  # the in-memory reader applies the same checks and casts
    assert len(whole["probe_sWeight"]) == N and whole["probe_Brunel_isMuon"].dtype == np.int32
