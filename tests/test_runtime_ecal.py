"""The ECAL stage of `flashsim simulate`: HepMC photons fly to the ECAL face, the configured ECAL model turns
those in acceptance into clusters (the data contract's `Calo` tree), photons never become tracks, the same seed
gives the same clusters, and a configured but missing ECAL model is an error unless `--skip ecal`.

The ECAL models here are tiny hand-built ONNX graphs with the real models' IO (GNN: x [N, 5], noise, edge_index;
Transformer: x [B, L, 5], mask, noise -> y (on, cluster x, y, E, p_on)): the stage's plumbing is under test, not
the physics of a trained model (tests/test_ecal_models.py trains and exports those)."""

from __future__ import annotations

import json
import shutil

import awkward as ak
import numpy as np
import pytest
import uproot

from flashsim.cli import main
from flashsim.detector import LHCB_ECAL
from flashsim.io.ecal import CLUSTER_FEATURES, PHOTON_FEATURES, Events
from flashsim.runtime import ecal, hepmc, io
from flashsim.runtime.simulate import OUT_TREE, PROVENANCE_KEY

NOISE = 4


def _ecal_onnx(path, kind: str) -> None:
    """on = noise[..., -1] < 0.3 (p_on ~ 0.62); cluster = photon (x, y) + 10 mm * noise[..., :2], E = 0.95 E."""
    import onnx
    from onnx import TensorProto, helper

    lead = ["N"] if kind == "gnn" else ["B", "L"]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*lead, 5])]
    if kind == "gnn":
        ins += [helper.make_tensor_value_info("noise", TensorProto.FLOAT, [*lead, NOISE]),
                helper.make_tensor_value_info("edge_index", TensorProto.INT64, [2, "E"])]
    else:
        ins += [helper.make_tensor_value_info("mask", TensorProto.BOOL, lead),
                helper.make_tensor_value_info("noise", TensorProto.FLOAT, [*lead, NOISE])]
    c = lambda n, v, t=TensorProto.INT64: helper.make_node(  # noqa: E731
        "Constant", [], [n], value=helper.make_tensor(n, t, [len(v)], v))
    sl = lambda out, src, a, b: helper.make_node("Slice", [src, a, b, "ax"], [out])  # noqa: E731
    nodes = [c("ax", [-1]), c("i0", [0]), c("i1", [1]), c("i2", [2]), c("i3", [3]), c("i4", [4]), c("i5", [5]),
             c("k10", [10.0], TensorProto.FLOAT), c("k95", [0.95], TensorProto.FLOAT),
             c("k03", [0.3], TensorProto.FLOAT), c("k06", [0.6], TensorProto.FLOAT),
             sl("px", "x", "i0", "i1"), sl("py", "x", "i1", "i2"), sl("pe", "x", "i4", "i5"),
             sl("n0", "noise", "i0", "i1"), sl("n1", "noise", "i1", "i2"), sl("nu", "noise", "i3", "i4"),
             helper.make_node("Less", ["nu", "k03"], ["onb"]),
             helper.make_node("Cast", ["onb"], ["on"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["n0", "k10"], ["dx"]), helper.make_node("Add", ["px", "dx"], ["cx"]),
             helper.make_node("Mul", ["n1", "k10"], ["dy"]), helper.make_node("Add", ["py", "dy"], ["cy"]),
             helper.make_node("Mul", ["pe", "k95"], ["ce"]),
             helper.make_node("Mul", ["on", "k06"], ["p0"]), helper.make_node("Sub", ["k06", "p0"], ["p1"]),
             helper.make_node("Add", ["p1", "p0"], ["p"]),
             helper.make_node("Concat", ["on", "cx", "cy", "ce", "p"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, kind, ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*lead, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps({
        "inputs": {"x": ["photon_x", "photon_y", "photon_tx", "photon_ty", "photon_E"]},
        "outputs": {"y": ["on", "cluster_x", "cluster_y", "cluster_E", "p_on"]}}))


@pytest.fixture(scope="module")
def models(runtime_toy_models, tmp_path_factory):
    d = tmp_path_factory.mktemp("ecal_models")
    for f in runtime_toy_models.iterdir():
        if f.is_file():
            shutil.copy(f, d / f.name)
    _ecal_onnx(d / "ecal_gnn.onnx", "gnn")
    _ecal_onnx(d / "ecal_transformer.onnx", "transformer")
    return d


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """A HepMC3 file of 12 events: 10 charged tracks and 8 photons each (some into the beam hole)."""
    rng = np.random.default_rng(5)
    cols = next(io.particle_gun(io.gun_config({"n": 216}), 2, chunk=216))
    cols["evtNumber"] = np.repeat(np.arange(12), 18).astype(np.int64)
    photon = np.tile(np.r_[np.zeros(10, bool), np.ones(8, bool)], 12)
    cols["mcID"][photon] = 22
    cols["mc_pz"][photon] = rng.uniform(2e3, 4e4, photon.sum())
    cols["mc_px"][photon] = cols["mc_pz"][photon] * rng.uniform(-0.25, 0.25, photon.sum())
    cols["mc_py"][photon] = cols["mc_pz"][photon] * rng.uniform(-0.2, 0.2, photon.sum())
    if "mother_ID" in cols:
        cols["mother_ID"][:] = 0
    path = hepmc.write(cols, tmp_path_factory.mktemp("ecal_in") / "photons.hepmc3")
    return path, int(photon.sum())


def _simulate(inp, models, out, *extra) -> int:
    return main(["simulate", "--input", str(inp), "--models", str(models), "--output", str(out), "--device", "cpu",
                 *extra])


def _read(path):
    with uproot.open(path) as f:
        clusters = f[ecal.TREE].arrays() if ecal.TREE in f else None
        return f[OUT_TREE].arrays(library="np"), clusters, json.loads(str(f[PROVENANCE_KEY]))


@pytest.mark.parametrize("model", ["ecal_gnn", "ecal_transformer"])
def test_photons_become_clusters(events, models, tmp_path, model):
    path, n_photons = events
    photons: list = []
    for _ in hepmc.read([path], photons=photons):
        pass
    face, ok = ecal.to_face(np.array(photons), LHCB_ECAL)
    assert len(photons) == n_photons and 0 < ok.sum() < n_photons  # some photons miss the face
    runs = []
    for i, seed in enumerate(("3", "3", "4")):
        out = tmp_path / f"{model}_{i}.root"
        assert _simulate(path, models, out, "--ecal", model, "--seed", seed) == 0
        runs.append(_read(out))
    tracks, calo, prov = runs[0]
    assert io.is_track(tracks["mcID"]).all() and len(tracks["mcID"]) == 12 * 10
    assert {"evtNumber", "nPhotons", "photon_x", "photon_E", "nClusters", "cluster_x", "cluster_E",
            "photon_clusterIndex"} <= set(calo.fields)
    ev = Events.from_columns({k: calo[k] for k in PHOTON_FEATURES + CLUSTER_FEATURES})  # the contract's layout
    n = len(ev.clusters)
    assert 0 < n <= ok.sum() == len(ev.photons) and np.all(ev.n_clusters <= ev.n_photons)
    assert prov["ecal"] == {"photons": n_photons, "in_acceptance": int(ok.sum()),
                            "out_of_acceptance": int(n_photons - ok.sum()), "clusters": n}
    assert prov["models"][model]["stage"] == "ecal" and len(prov["models"][model]["onnx_sha256"]) == 64
    # the photons on the face are those in acceptance, by decreasing energy in each event
    evt = np.array(photons)[ok, 0].astype(np.int64)
    want = face[ok][np.lexsort((-face[ok, 4], evt))]
    np.testing.assert_allclose(ev.photons, want, rtol=1e-5, atol=1e-3)
    # each cluster comes from its photon's slot: near it (the toy's 10 mm spread), with 0.95 of its energy
    idx = ak.to_numpy(ak.flatten(calo["photon_clusterIndex"]))
    src = np.flatnonzero(idx >= 0)
    assert len(src) == n and np.array_equal(idx[src], np.concatenate([np.arange(k) for k in ev.n_clusters]))
    np.testing.assert_allclose(ev.clusters[:, 2], 0.95 * ev.photons[src, 4], rtol=1e-5)
    assert np.all(np.hypot(*(ev.clusters[:, :2] - ev.photons[src, :2]).T) < 80)
    same, other = runs[1][1], runs[2][1]
    for k in calo.fields:
        assert ak.all(same[k] == calo[k]), k
    assert not ak.all(ak.num(other["cluster_x"]) == ak.num(calo["cluster_x"])) or not ak.all(
        other["cluster_x"] == calo["cluster_x"])


def test_missing_ecal_model_is_an_error_unless_skipped(events, runtime_toy_models, tmp_path, capsys):
    path, n_photons = events
    out = tmp_path / "out.root"
    assert _simulate(path, runtime_toy_models, out, "--ecal", "ecal_gnn") == 2
    assert "ecal_gnn" in capsys.readouterr().err and not out.exists()
    assert _simulate(path, runtime_toy_models, out, "--ecal", "ecal_gnn", "--skip", "ecal") == 0
    tracks, calo, prov = _read(out)
    assert calo is None and "ecal_gnn" in prov["skipped"] and prov["particles"]["photons"] == n_photons
    assert io.is_track(tracks["mcID"]).all()


@pytest.mark.parametrize("kind", ["gnn", "transformer"])
def test_stage_feeds_the_real_nets_as_their_families_export_them(kind, tmp_path):
    """The stage's inputs (GNN edges, Transformer padding/mask, noise layout) match the torch nets' own: the
    exported graph through EcalModel.run equals the torch module on the same photons and noise."""
    import torch

    from flashsim.detsim import ecal as detsim_ecal
    from flashsim.io import ecal as D
    from flashsim.models.ecal import core as C
    from flashsim.models.ecal.gnn_net import EcalGNN
    from flashsim.models.ecal.transformer_net import EcalTransformer

    torch.manual_seed(0)
    ev = Events.from_columns(next(detsim_ecal.chunks(40, 40, lambda i: np.random.default_rng(3), {})))
    ev = ev.select(np.flatnonzero(ev.n_photons > 0))
    net = (EcalGNN(16, 2, NOISE) if kind == "gnn" else EcalTransformer(16, 2, 1, 1, NOISE)).eval()
    if kind == "gnn":
        args = (torch.as_tensor(ev.photons, dtype=torch.float32), torch.zeros(len(ev.photons), NOISE),
                torch.as_tensor(D.radius_edges(ev)))
        names, axes = ["x", "noise", "edge_index"], {"x": {0: "N"}, "noise": {0: "N"}, "edge_index": {1: "E"},
                                                      "y": {0: "N"}}
    else:
        x, mask = C.pad_events(ev)
        args = (torch.as_tensor(x), torch.as_tensor(mask), torch.zeros(*mask.shape, NOISE))
        names, axes = ["x", "mask", "noise"], {n: {0: "B", 1: "L"} for n in ("x", "mask", "noise", "y")}
    path = tmp_path / f"{kind}.onnx"
    with torch.no_grad():
        torch.onnx.export(net, args, str(path), input_names=names, output_names=["y"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    model = ecal.EcalModel(path, LHCB_ECAL, threads=1)
    assert model.kind == kind and model.noise_dim == NOISE
    got = model.run(ev.n_photons, ev.photons, np.random.default_rng(7))
    noise = np.random.default_rng(7).standard_normal((len(ev.photons), NOISE)).astype(np.float32)
    with torch.no_grad():
        if kind == "gnn":
            want = net(args[0], torch.as_tensor(noise), args[2]).numpy()
        else:
            nz = np.zeros((*mask.shape, NOISE), np.float32)
            nz[mask] = noise
            want = net(args[0], args[1], torch.as_tensor(nz)).numpy()[mask]
    assert got.shape == (len(ev.photons), 5) and 0 < got[:, 0].sum() < len(got)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_model_of_another_ecal_geometry_is_an_error(events, models, tmp_path, capsys):
    path, _ = events
    d = tmp_path / "models"
    shutil.copytree(models, d)
    for z, rc in ((9000.0, 2), (LHCB_ECAL.z, 0)):
        geo = {**LHCB_ECAL.to_dict(), "z": z}
        (d / "ecal_gnn.json").write_text(json.dumps({
            "inputs": [{"name": "x", "columns": [{"name": n} for n in PHOTON_FEATURES], "detector": {"ecal": geo}}],
            "outputs": {"y": ["on", "cluster_x", "cluster_y", "cluster_E", "p_on"]}}))
        assert _simulate(path, d, tmp_path / f"out_{rc}.root", "--ecal", "ecal_gnn") == rc
    assert "geometry" in capsys.readouterr().err and not (tmp_path / "out_2.root").exists()
