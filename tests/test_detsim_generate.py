"""flashsim generate: byte-reproducible, atomic, chunked ROOT files; the ghost and signal kinds; the benchmark."""

from __future__ import annotations

import hashlib
import json

import awkward as ak
import numpy as np
import pytest
import uproot

from flashsim.cli import main
from flashsim.config import load_params
from flashsim.detsim import ghost, signal, writer
from flashsim.detsim import kinematics as kin
from flashsim.detsim import samples as registry
from flashsim.detsim import truth as tr
from flashsim.io.contract import GHOST, SIGNAL, TRACKING, Column, Sample


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _generate(sample, out, *extra) -> int:
    return main(["generate", sample, "--output", str(out), "--no-progress", *extra])


def test_same_seed_same_chunks_byte_identical(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    a, b, c = tmp_path / "a" / "tracking.root", tmp_path / "b" / "tracking.root", tmp_path / "c" / "tracking.root"
    for out in (a, b):
        assert _generate("tracking", out, "--size", "30000", "--chunk-size", "12000", "--seed", "5") == 0
    assert _md5(a) == _md5(b)
    assert _generate("tracking", c, "--size", "30000", "--chunk-size", "12000", "--seed", "6") == 0
    assert _md5(a) != _md5(c)
    # the file holds exactly the chunks, every contract branch with its dtype
    t = uproot.open(a)[TRACKING.tree]
    assert t.num_entries == 30000
    back = t.arrays(library="np")
    chunks = list(registry.kind_module("tracking").chunks(30000, 12000, registry.rng_factory(5, "tracking"), {}))
    for col in TRACKING.columns:
        assert back[col.name].dtype == np.dtype(col.dtype), col.name
        np.testing.assert_array_equal(back[col.name], np.concatenate([ch[col.name] for ch in chunks]))
    assert not list(a.parent.glob(".*"))  # no temporary left behind
    # nothing in the file depends on the clock or a random UUID
    f = uproot.open(a)
    assert uproot._util.code_to_datetime(f.key(TRACKING.tree).fDatime) == writer.FIXED_TIME
    assert uproot._util.code_to_datetime(f.file.root_directory.fDatimeC) == writer.FIXED_TIME
    assert f.file.uuid == writer.deterministic_uuid("tracking:5:30000:12000")


def test_all_kinds_generate_at_small_size(tmp_path, repo_root, monkeypatch):
    from flashsim.io.contract import SAMPLES

    monkeypatch.chdir(repo_root)
    params = load_params()
    for name, entry in params["detsim"]["samples"].items():
        out = tmp_path / f"{name}.root"
        assert _generate(name, out, "--size", "3000", "--chunk-size", "1500") == 0, name
        inputs = params["inputs"][name]
        t = uproot.open(out)[inputs.get("tree") or SAMPLES[entry["kind"]].tree]
        assert t.num_entries >= 3000, name
        for branch in inputs.get("branches", {}).values():
            assert branch in t.keys(), (name, branch)


def test_bad_requests_give_one_line_errors(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    assert _generate("no_such_sample", tmp_path / "x.root") == 2
    assert "unknown sample 'no_such_sample'" in capsys.readouterr().err
    assert _generate("tracking", tmp_path / "x.root", "--size", "0") == 2
    assert not (tmp_path / "x.root").exists()


def test_writer_is_atomic_and_renames(tmp_path):
    chunks = list(registry.kind_module("tracking").chunks(2000, 1000, registry.rng_factory(1, "tracking"), {}))

    def failing():
        yield chunks[0]
        raise RuntimeError("generator failed")

    out = tmp_path / "t.root"
    with pytest.raises(RuntimeError):
        writer.write_root(out, failing(), TRACKING)
    assert list(tmp_path.iterdir()) == []
    writer.write_root(out, chunks, TRACKING, tree="T2", rename={"p": "P", "mcID": "TRUEID"}, compression="zstd")
    t = uproot.open(out)["T2"]
    assert "P" in t.keys() and "TRUEID" in t.keys() and "p" not in t.keys()
    np.testing.assert_array_equal(t["TRUEID"].array(library="np"), np.concatenate([c["mcID"] for c in chunks]))
    with pytest.raises(ValueError, match="missing"):
        writer.write_root(tmp_path / "u.root", [{"p": chunks[0]["p"]}], TRACKING)


def test_writer_jagged_groups_share_their_counter(tmp_path):
    sample = Sample("toy", "Toy", "event", "toy", (
        Column("evtNumber", "int64", "1", "event"), Column("nHits", "int32", "1", "hits"),
        Column("hit_x", "var * float32", "mm", "x"), Column("hit_q", "var * int32", "1", "q")))
    counts = np.array([2, 0, 3], dtype=np.int32)
    x = ak.unflatten(np.arange(5, dtype=np.float32), counts)
    chunk = {"evtNumber": np.arange(3), "nHits": counts, "hit_x": x, "hit_q": ak.values_astype(x * 2, np.int32)}
    paths = [tmp_path / d / "toy.root" for d in ("a", "b")]
    for p in paths:
        writer.write_root(p, [chunk, chunk], sample, rename={"hit_x": "HitX"})
    assert _md5(paths[0]) == _md5(paths[1])
    t = uproot.open(paths[0])["Toy"]
    assert t.keys() == ["evtNumber", "nHits", "HitX", "hit_q"]
    back = t.arrays()
    assert ak.to_list(back["HitX"]) == ak.to_list(x) * 2
    assert back["nHits"].to_list() == [2, 0, 3] * 2
    bad = dict(chunk, nHits=counts + 1)
    with pytest.raises(ValueError, match="nHits"):
        writer.write_root(tmp_path / "bad.root", [bad], sample)


def test_ghost_sample_truth_is_the_calibrated_posterior(tmp_path):
    chunk = ghost.make_chunk(0, 60_000, 60_000, registry.rng_factory(2, "ghost")(0))
    assert list(chunk) == GHOST.names()
    for c in GHOST.columns:
        assert chunk[c.name].dtype == np.dtype(c.dtype), c.name
    q, y = chunk["true_ghostProb"].astype(float), chunk["isGhost"]
    assert 0.1 < y.mean() < 0.3
    for lo in (0.0, 0.2, 0.4, 0.6, 0.8):
        sel = (q >= lo) & (q < lo + 0.2)
        assert abs(y[sel].mean() - q[sel].mean()) < 5 * np.sqrt(q[sel].mean() * (1 - q[sel].mean()) / sel.sum())
    # more ghosts at high occupancy, and truth recomputed from the file's float32 features is identical
    assert y[chunk["nTracks"] > 250].mean() > y[chunk["nTracks"] < 80].mean()
    writer.write_root(tmp_path / "g.root", [chunk], GHOST)
    back = uproot.open(tmp_path / "g.root")["GhostTracks"].arrays(library="np")
    np.testing.assert_array_equal(tr.ghost_probability(back).astype(np.float32), back["true_ghostProb"])


def test_signal_decays():
    n = 3000
    c = signal.make_chunk(0, n, n, registry.rng_factory(3, "signal")(0))
    assert set(c) == set(SIGNAL.names())
    for col in SIGNAL.columns:
        assert c[col.name].dtype == np.dtype(col.dtype), col.name
        assert len(c[col.name]) == 4 * n
    role = c["signal_role"].reshape(n, 4)
    assert (role == [1, 2, 3, 4]).all()
    assert (c["evtNumber"].reshape(n, 4) == c["evtNumber"].reshape(n, 4)[:, :1]).all()
    assert (c["mc_charge"].reshape(n, 4).sum(axis=1) == 0).all()
    mother = c["mother_ID"].reshape(n, 4)
    assert (np.abs(mother[:, :3]) == 4122).all() and (np.abs(mother[:, 3]) == 5122).all()
    assert set(np.unique(np.abs(c["mcID"]))) == {2212, 321, 211, 13}
    # Lc+ mass from the true momenta of p K pi; Lb0 - Lc+ - mu mass difference leaves room for the neutrino
    mom = np.stack([c[k].astype(float).reshape(n, 4) for k in ("mc_px", "mc_py", "mc_pz")], axis=2)
    masses = kin.mass_of(c["mcID"]).reshape(n, 4)
    e = np.sqrt((mom**2).sum(axis=2) + masses**2)
    m_lc = np.sqrt(e[:, :3].sum(1) ** 2 - (mom[:, :3].sum(1) ** 2).sum(1))
    np.testing.assert_allclose(m_lc, signal.M_LC, atol=0.5)
    m_lcmu = np.sqrt(e.sum(1) ** 2 - (mom.sum(1) ** 2).sum(1))
    assert (m_lcmu < signal.M_LB).all() and (m_lcmu > signal.M_LC + signal.M_MU).all()
    # displaced vertices: Lc daughters share a vertex downstream of the PV; the muon starts at the Lb vertex
    z = c["mc_z"].reshape(n, 4)
    assert (z[:, 0] == z[:, 1]).all() and (z[:, 1] == z[:, 2]).all()
    assert np.median(z[:, 3] - c["pv_z"].reshape(n, 4)[:, 0]) > 1.0
    assert np.median(z[:, 0] - z[:, 3]) > 0
    # PID only for reconstructed tracks; muons mostly isMuon, kaons mostly PIDK > 0
    lost = c["type"] == 0
    assert np.isnan(c["PIDK"][lost]).all() and (c["isMuon"][lost] == 0).all()
    assert np.isfinite(c["PIDK"][~lost]).all()
    assert c["isMuon"][(c["signal_role"] == 4) & ~lost].mean() > 0.8
    assert np.mean(c["PIDK"][(c["signal_role"] == 2) & ~lost] > 0) > 0.7


def test_bench_generate_writes_json(tmp_path, repo_root, monkeypatch):
    from flashsim.bench import generate as bench_generate

    monkeypatch.chdir(repo_root)
    params = load_params()
    params["detsim"]["chunk_size"] = 10_000
    r = bench_generate.run(quick=True, params=params, size=30_000)
    assert r["particles"] == 30_000 and r["particles_per_s"] > 0 and 0 < r["generation_share_of_wall"] < 1
    out = tmp_path / "generate.json"
    assert main(["bench", "generate", "--quick", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["particles"] == bench_generate.QUICK_SIZE
