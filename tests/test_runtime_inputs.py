"""`flashsim simulate` inputs and output metadata: HepMC3 / HepMC2 (.gz) files give the same sample as the ROOT
file of the same events, neutral particles never become tracks, a missing model is an error unless skipped, and
the output records which models made it."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import uproot

from flashsim.cli import main
from flashsim.detsim import signal
from flashsim.runtime import hepmc, io
from flashsim.runtime.simulate import OUT_TREE, PROVENANCE_KEY


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """Generated signal decays as HepMC2, gzipped HepMC3 and ROOT (rows in the HepMC files' particle order)."""
    d = tmp_path_factory.mktemp("inputs")
    cols = signal.make_chunk(0, 60, 60, np.random.default_rng(8))
    files = {"hepmc2": hepmc.write(cols, d / "signal.hepmc2", "HepMC2"),
             "hepmc3": hepmc.write(cols, d / "signal.hepmc3.gz", "HepMC3")}
    rows = next(hepmc.read(files["hepmc3"]))
    assert len(rows["mcID"]) == 240 and np.all(rows["nTracks"] == np.repeat(cols["nTracks"][::4], 4))
    with uproot.recreate(d / "signal.root") as f:
        f.mktree("Gen", {k: v.dtype for k, v in rows.items()})
        f["Gen"].extend(rows)
    files["root"] = d / "signal.root"
    return files


def _simulate(inp, models, out, *extra) -> int:
    return main(["simulate", "--input", str(inp), "--models", str(models), "--output", str(out), "--device", "cpu",
                 "--seed", "3", *extra])


def _read(path):
    with uproot.open(path) as f:
        return f[OUT_TREE].arrays(library="np"), json.loads(str(f[PROVENANCE_KEY]))


def test_hepmc_inputs_give_the_root_sample(events, runtime_toy_models, tmp_path):
    out = {}
    for kind, path in events.items():
        assert _simulate(path, runtime_toy_models, tmp_path / f"{kind}.root") == 0
        out[kind], _ = _read(tmp_path / f"{kind}.root")
    assert set(out["root"]) == set(out["hepmc2"]) == set(out["hepmc3"])
    assert {"PIDK", "x_ClosestToBeam", "mother_ID", "pv_z"} <= set(out["root"])
    for kind in ("hepmc2", "hepmc3"):
        for k, v in out["root"].items():
            np.testing.assert_array_equal(out[kind][k], v, err_msg=f"{kind}: {k}")


def test_neutral_particles_never_become_tracks(runtime_toy_models, tmp_path):
    assert list(io.charge_of([22, 2112, 130, 111, 310, 11, -13, 211, -321, 2212])) == [0, 0, 0, 0, 0, -1, 1, 1, -1, 1]
    cols = next(io.particle_gun(io.gun_config({"n": 200}), 1, chunk=200))
    neutral = np.array([22, 2112, 130, 111, 22], np.int32)
    mixed = {k: np.concatenate([v, v[: len(neutral)]]) for k, v in cols.items()}
    mixed["mcID"][-len(neutral):] = neutral
    del mixed["mc_charge"]  # derived from the PDG id
    with uproot.recreate(tmp_path / "mixed.root") as f:
        f.mktree("T", {k: v.dtype for k, v in mixed.items()})
        f["T"].extend(mixed)
    # and a HepMC file with photons and a neutron next to the tracks
    extra = {k: v[:3].copy() for k, v in cols.items()}
    extra["mcID"][:] = [22, 22, 2112]
    hep = hepmc.write({k: np.concatenate([cols[k], extra[k]]) for k in cols}, tmp_path / "mixed.hepmc3")
    for inp in (tmp_path / "mixed.root", hep):
        out_path = tmp_path / f"{inp.stem}_out.root"
        assert _simulate(inp, runtime_toy_models, out_path) == 0
        got, prov = _read(out_path)
        assert len(got["mcID"]) == 200 and io.is_track(got["mcID"]).all()
        assert np.array_equal(got["mc_charge"], io.charge_of(got["mcID"])) and np.all(got["mc_charge"] != 0)
    assert prov["particles"]["photons"] == 2 and prov["particles"]["others"] == {"2112": 1}


def test_missing_model_is_an_error_unless_skipped(runtime_toy_models, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(runtime_toy_models, models)
    (models / "covariance.onnx").unlink()
    gun = tmp_path / "gun.yaml"
    gun.write_text("n: 500\n")
    out = tmp_path / "flash.root"
    capsys.readouterr()
    assert main(["simulate", "--gun", str(gun), "--models", str(models), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "covariance" in err and "--skip covariance" in err and not out.exists()
    assert main(["simulate", "--gun", str(gun), "--models", str(models), "--output", str(out),
                 "--skip", "bogus"]) == 2
    assert main(["simulate", "--gun", str(gun), "--models", str(models), "--output", str(out), "--seed", "9",
                 "--skip", "covariance"]) == 0
    got, prov = _read(out)
    assert "cov_ClosestToBeam_0_0" not in got and "PIDK" in got
    assert prov["skipped"] == ["covariance"] and prov["seed"] == 9
    from flashsim import __version__

    assert prov["flashsim_version"] == __version__
    assert set(prov["models"]) == {"acceptance", "efficiency", "resolution", *(f"pid_pipeline_{s}" for s in
                                                                               ("mu", "pi", "K", "p"))}
    acc = prov["models"]["acceptance"]
    assert acc["onnx_sha256"] == hashlib.sha256((models / "acceptance.onnx").read_bytes()).hexdigest()
    assert acc["origin"] == str(models / "acceptance.onnx") and acc["stage"] == "acceptance"


def test_candidate_tree_reads_like_an_lhcb_ntuple(events, runtime_toy_models, tmp_path):
    """The signal decays of a HepMC file come out as a DecayTreeTuple-like tree next to the particle tree."""
    from flashsim.runtime import physics
    from flashsim.runtime.candidates import SENTINEL, TREE

    out = tmp_path / "flash.root"
    assert _simulate(events["hepmc2"], runtime_toy_models, out) == 0
    parts, prov = _read(out)
    assert set(np.unique(parts["signal_role"])) == {1, 2, 3, 4}  # roles from the mothers' PDG ids
    with uproot.open(out) as f:
        cand = f[TREE].arrays(library="np")
    n = len(cand["eventNumber"])
    ref = physics.candidates(parts, (3,))
    assert n == len(ref.m_lc) == prov["candidates"] > 0
    np.testing.assert_allclose(cand["Lc_M"], ref.m_lc, rtol=1e-6)
    np.testing.assert_allclose(cand["Lb_M"], ref.m_lb_visible, rtol=1e-6)
    assert {"p_PIDK", "K_PIDK", "mu_IPCHI2_OWNPV", "pi_IP_OWNPV", "mu_isMuon", "Lc_PT", "p_TRUEID"} <= set(cand)
    assert np.all(np.abs(cand["p_TRUEID"]) == 2212) and np.all(np.abs(cand["mu_TRUEID"]) == 13)
    assert np.all(cand["K_TRACK_Type"] == 3)
    # an analyst's cut reads as on LHCb ntuples: no NaN, undefined values are the sentinel
    for k, v in cand.items():
        assert not np.any(np.isnan(v)), k
    assert np.all(cand["mu_IP_OWNPV"] >= 0)
    assert np.all(cand["mu_IPCHI2_OWNPV"] == SENTINEL)  # the toy covariance has no off-diagonal terms: undefined
