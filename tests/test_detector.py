"""The detector description (flashsim.detector): codes defined once, the ECAL geometry from configuration and
followed by the reference simulation, the ECAL data and the exported models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import scratch_repo

from flashsim import detector
from flashsim.config import load_params
from flashsim.detector import LHCB_ECAL, EcalGeometry, EcalRegion, ecal_geometry
from flashsim.errors import ConfigError
from flashsim.io import ecal as D

ROOT = Path(__file__).resolve().parents[1]
# a coarser ECAL than LHCb's: two regions, other z
OTHER = {"z": 9000.0, "regions": [{"half_x": 1500.0, "half_y": 1000.0, "cell": 80.0},
                                  {"half_x": 3000.0, "half_y": 2500.0, "cell": 160.0}], "beam_hole": [200.0, 200.0]}


def test_schema_defaults_and_params_are_the_lhcb_geometry():
    schema = yaml.safe_load((ROOT / "schemas" / "params.schema.yaml").read_text())
    ecal = schema["properties"]["detector"]["properties"]["ecal"]["properties"]
    defaults = {k: v["default"] for k, v in ecal.items()}
    assert EcalGeometry.from_dict(defaults) == LHCB_ECAL == EcalGeometry()
    assert ecal_geometry(load_params(ROOT / "params.yaml")) == LHCB_ECAL
    assert ecal_geometry({}) == LHCB_ECAL  # a params file without the section takes the defaults


def test_codes_are_the_contract_conventions():
    assert detector.SPECIES_PDG == {"e": 11, "mu": 13, "pi": 211, "K": 321, "p": 2212}
    assert detector.TRACK_TYPE_CODES == (0, 3, 4, 5)
    assert detector.TRACK_TYPE_NAMES == ("none", "long", "upstream", "downstream")
    from flashsim.detsim import kinematics, pid, truth
    from flashsim.models import tracking
    from flashsim.runtime import features

    assert truth.TYPE_CODES == features.TYPE_CODES == detector.TRACK_TYPE_CODES
    assert pid.SPECIES_TO_PDG == features.SPECIES_PDG == detector.SPECIES_PDG
    assert list(kinematics.PDG) == [detector.SPECIES_PDG[s] for s in kinematics.SPECIES]
    assert tracking.TYPES == {"is_long": 3, "is_upstream": 4, "is_downstream": 5}


@pytest.mark.parametrize("bad, key", [
    ({"regions": [{"half_x": 100.0, "half_y": 100.0, "cell": 10.0}, {"half_x": 50.0, "half_y": 200.0, "cell": 20.0}]},
     "regions/1"),
    ({"beam_hole": [1000.0, 10.0]}, "beam_hole"),
    ({"regions": [{"half_x": 100.0, "cell": 10.0}]}, "half_y"),
    ({"depth": 3.0}, "unknown keys"),
])
def test_bad_geometry_is_a_config_error_naming_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        ecal_geometry({"detector": {"ecal": bad}})


def test_schema_rejects_a_bad_geometry(tmp_path):
    scratch_repo(tmp_path, {}, detector={"ecal": {"z": -1.0}})
    with pytest.raises(ConfigError, match="detector/ecal/z"):
        load_params(tmp_path / "params.yaml")


def test_cell_sizes_follow_the_geometry_in_numpy_and_torch():
    from flashsim.models.ecal import core as C

    geo = EcalGeometry.from_dict(OTHER)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-3500, 3500, 5000), rng.uniform(-3000, 3000, 5000)
    cell = geo.cell_size(x, y)
    assert set(np.unique(cell)) == {80.0, 160.0}
    assert np.array_equal(C.cell_size_t(torch.as_tensor(x), torch.as_tensor(y), geo).numpy(), cell)
    assert not np.array_equal(cell, LHCB_ECAL.cell_size(x, y))
    # the in-graph features use the geometry's cells and z
    p = torch.tensor([[1000.0, 500.0, 0.1, 0.05, 5000.0]])
    f_lhcb, f_other = C.PhotonFeatures()(p), C.PhotonFeatures(geometry=geo)(p)
    assert float(f_other[0, -1]) == pytest.approx(np.log(80.0 / C.CELL_SCALE), rel=1e-6)
    assert float(f_lhcb[0, -1]) == pytest.approx(np.log(60.6 / C.CELL_SCALE), rel=1e-6)
    assert float(f_other[0, 5]) != float(f_lhcb[0, 5])  # log ET seen from another z


def test_events_carry_their_geometry():
    geo = EcalGeometry.from_dict(OTHER)
    photons = np.array([[0.0, 300.0, 0, 0, 1000.0], [0.0, 560.0, 0, 0, 1000.0]])
    # 260 mm apart: within 4 cells of 80 mm, not within 4 cells of LHCb's inner 40.4 mm (both inner photons)
    assert D.radius_edges(D.Events([2], photons, [0], np.empty((0, 3)))).shape[1] == 0
    ev = D.Events([2], photons, [0], np.empty((0, 3)), geo)
    assert D.radius_edges(ev).shape[1] == 2 and ev.select(np.array([0])).geometry == geo


def test_reference_simulation_generates_in_the_configured_geometry():
    from flashsim.detsim import ecal
    from flashsim.seeding import rng_factory

    cols = next(ecal.chunks(300, 300, rng_factory(1, "ecal"), {"detector": {"ecal": OTHER}}))
    x, y = (np.concatenate(list(map(np.asarray, cols[c]))) for c in ("photon_x", "photon_y"))
    assert len(x) and (np.abs(x) < 3000).all() and (np.abs(y) < 2500).all()
    assert not ((np.abs(x) < 200) & (np.abs(y) < 200)).any()
    lhcb = next(ecal.chunks(300, 300, rng_factory(1, "ecal"), {}))
    assert (np.abs(np.concatenate(list(map(np.asarray, lhcb["photon_x"])))) > 3000).any()


def test_ecal_family_records_and_bakes_the_configured_geometry(tmp_path, monkeypatch):
    from flashsim.models import get_family

    scratch_repo(tmp_path, {"ecal_gnn": {"family": "ecal_gnn", "sample": "ecal", "width": 8, "layers": 1}},
                 detector={"ecal": OTHER})
    monkeypatch.chdir(tmp_path)
    fam = get_family("ecal_gnn", load_params(tmp_path / "params.yaml"))
    assert fam.geometry == EcalGeometry.from_dict(OTHER)
    assert fam.io_inputs()[0]["detector"]["ecal"] == EcalGeometry.from_dict(OTHER).to_dict()
    from flashsim.models.ecal import core as C

    module = fam.build(C.PhotonFeatures(geometry=fam.geometry), C.SlotOutput(geometry=fam.geometry))
    assert module.features.geometry == module.output.geometry == fam.geometry
    assert EcalRegion(1500.0, 1000.0, 80.0) in fam.example_events().geometry.regions
    # the exported graph computes with the configured geometry (same weights, LHCb cells give other outputs)
    from flashsim.export import ort_session

    fam.module = module.eval()
    fam.to_onnx(tmp_path / "g.onnx")
    ev = fam.example_events()
    noise = fam.noise_for(ev, 1)
    y_onnx = fam.run(fam.onnx_fn(ort_session(tmp_path / "g.onnx")), ev, noise)
    np.testing.assert_allclose(y_onnx, fam.run(fam.torch_fn(), ev, noise), rtol=1e-4, atol=1e-3)
    lhcb = fam.build(C.PhotonFeatures(), C.SlotOutput())
    lhcb.load_state_dict(module.state_dict())
    fam.module = lhcb.eval()
    assert not np.allclose(fam.run(fam.torch_fn(), ev, noise)[:, 1:3], y_onnx[:, 1:3])
