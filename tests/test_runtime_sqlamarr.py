"""The chain inside the real SQLamarr (HepMC2 -> PVFinder -> MCParticleSelector -> Plugin / GenerativePlugin over
our shared objects) gives what ``flashsim simulate``'s chain gives on the same particles with the same draws."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from flashsim.detsim import signal
from flashsim.runtime import export_c, hepmc, sqlamarr
from flashsim.runtime.chain import ChainSpec, Replay

pytestmark = pytest.mark.slow  # eight parity-gated C builds (~1 min on two cores)

PID = ("mu", "pi", "K", "p")  # the toy chain's PID pipelines
SPEC = ChainSpec(pid={s: f"pid_pipeline_{s}" for s in PID})
ALL = ("acceptance", "efficiency", "resolution", "covariance", *SPEC.pid.values())


@pytest.fixture(scope="module")
def built(runtime_toy_models, tmp_path_factory):
    """The toy models with their shared objects (parity-gated builds) and the SQLamarr pipeline file."""
    import os

    root = tmp_path_factory.mktemp("sqlamarr")
    models = root / "models"
    shutil.copytree(runtime_toy_models, models)
    cwd = os.getcwd()
    os.chdir(root)  # build_checked keeps its C sources under results/cabi
    try:
        for name in ALL:
            export_c.build_checked(name, models, rows=300)
        config = sqlamarr.write_config(models, SPEC)
    finally:
        os.chdir(cwd)
    return root, models, config


def _echo_library(path, config: dict) -> dict[str, tuple[str, str]]:
    """A stand-in per generator that returns the noise SQLamarr hands it (to read back the noise of a run)."""
    src, libs = [], {}
    for name, m in config["models"].items():
        if m["plugin"] != "GenerativePlugin":
            continue
        n_out, n_rnd = len(m["outputs"]), m["n_random"]
        assert n_rnd <= n_out, "the echo returns the noise through the outputs"
        fn = f"echo_{name}"
        src.append(f"float* {fn}(float* out, const float* in, const float* r) {{ (void)in;\n"
                   f"  for (int j = 0; j < {n_out}; ++j) out[j] = j < {n_rnd} ? r[j] : 0.0f; return out; }}")
        libs[name] = (str(path), fn)
    (path.parent / "echo.c").write_text("\n".join(src) + "\n")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(path), str(path.parent / "echo.c")], check=True)
    return libs


def _signal_events(n: int):
    cols = signal.make_chunk(0, n, n, np.random.default_rng(4))
    photons = {k: v[:3].copy() for k, v in cols.items()}  # a photon in three events: never a track
    photons["mcID"][:] = 22
    photons["mother_ID"][:] = 0
    return {k: np.concatenate([cols[k], photons[k]]) for k in cols}


def test_pipeline_config_is_complete(built):
    _, models, config = built
    cfg = json.loads(config.read_text())
    kinds = {s["model"]: s["kind"] for s in cfg["steps"] if "model" in s}
    assert kinds == {"acceptance": "Plugin", "efficiency": "Plugin", "resolution": "GenerativePlugin",
                     "covariance": "GenerativePlugin", **dict.fromkeys(SPEC.pid.values(), "GenerativePlugin")}
    gen = next(s for s in cfg["steps"] if s.get("model") == "resolution")
    assert gen["n_random"] == 4 and (models / gen["library"]).exists()
    meta = json.loads((models / "resolution.so.json").read_text())
    assert meta["sqlamarr"] == {"plugin": "GenerativePlugin", "function": "resolution", "n_random": 4}
    # strict: a missing shared object is an error unless its stage is skipped
    (models / "covariance.so").rename(models / "covariance.so.off")
    try:
        with pytest.raises(Exception, match="covariance"):
            sqlamarr.pipeline_config(models, SPEC)
        assert not any(s.get("model") == "covariance"
                       for s in sqlamarr.pipeline_config(models, SPEC, skip=("covariance",))["steps"])
    finally:
        (models / "covariance.so.off").rename(models / "covariance.so")


def test_sqlamarr_matches_flashsim_on_same_particles_and_noise(built, tmp_path):
    from flashsim.runtime.session import pick_device
    from flashsim.runtime.simulate import Settings, build_chain, run_chain

    _, models, config = built
    events = _signal_events(40)
    hep = hepmc.write(events, tmp_path / "signal.hepmc2", "HepMC2", event_info=False)
    db = sqlamarr.execute(config, hep, tmp_path / "run.db", seed=11)
    got = sqlamarr.read_output(db)
    draws = sqlamarr.read_output(db, "fs_draws")
    n = len(got["mcID"])
    assert n == 160 and not np.isin(np.abs(got["mcID"]), [22]).any()
    assert np.all(got["nTracks"] == 4)
    assert 0 < got["acceptance"].sum() and (got["type"] > 0).sum() > 10
    # the same pipeline again, each generator replaced by an echo of its noise: the noise of the first run
    cfg = json.loads(config.read_text())
    echo = sqlamarr.execute(config, hep, tmp_path / "echo.db", seed=11,
                            libraries=_echo_library(tmp_path / "echo.so", cfg), keep_stage_outputs=True)
    again = sqlamarr.read_output(echo)
    np.testing.assert_array_equal(again["type"], got["type"])  # same draws: same rows per stage

    # flashsim's reader and chain on the same file, with SQLamarr's draws and noise
    cen = hepmc.Census()
    chunk = next(hepmc.read(hep, census=cen))
    assert cen.photons == 3 and cen.tracks == n
    key = lambda c: list(zip(c["mcID"].astype(int), np.float32(c["mc_px"]), np.float32(c["mc_pz"]), strict=True))  # noqa: E731
    pos = {k: i for i, k in enumerate(key(got))}
    order = np.array([pos[k] for k in key(chunk)])  # flashsim row -> SQLamarr row
    assert np.array_equal(got["mcparticle_id"][order], draws["mcparticle_id"][order])
    noise = {}
    for name, m in cfg["models"].items():
        if m["plugin"] == "GenerativePlugin":
            raw = sqlamarr.read_output(echo, f"raw_{name}")
            full = np.full((n, m["n_random"]), np.nan, np.float32)
            at = {int(i): j for j, i in enumerate(got["mcparticle_id"])}
            for r, pid in enumerate(raw["mcparticle_id"]):
                full[at[int(pid)]] = [raw[o][r] for o in m["outputs"][: m["n_random"]]]
            noise[name] = full[order]
    import torch

    u = np.stack([draws[d] for d in sqlamarr.DRAWS], 1)[order]
    replay = Replay(torch.from_numpy(u.astype(np.float32)), {k: torch.from_numpy(v) for k, v in noise.items()})
    settings = Settings(models=str(models), device="cpu", species=PID, tree_backend="onnx")
    chain = build_chain(settings, pick_device("cpu"))
    ours = next(run_chain(chain, [chunk], seed=1, batch_size=10**6, replay=replay))
    theirs = {k: v[order] for k, v in got.items()}
    np.testing.assert_array_equal(ours["acceptance"], theirs["acceptance"])
    np.testing.assert_array_equal(ours["type"], theirs["type"])
    compared = []
    for col in chain.output_columns():
        if col in ("acceptance", "type") or col not in ours:
            continue
        a, b = np.asarray(ours[col], np.float64), theirs[col]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=col)
        ok = ~np.isnan(a)
        scale = max(np.abs(b[ok]).max(initial=0.0), 1e-30)
        assert np.abs(a[ok] - b[ok]).max(initial=0.0) <= 1e-4 * scale, col
        compared.append(col)
    assert {"x_ClosestToBeam", "p", "cov_ClosestToBeam_0_0", "PIDK", "isMuon", "z_ClosestToBeam"} <= set(compared)
