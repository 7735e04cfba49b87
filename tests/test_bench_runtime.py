"""The runtime benchmark's equivalents of our models (same weights) and its per-particle C driver."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest
import scikinc_baseline as scikinc
import torch

from flashsim.bench import runtime as bench
from flashsim.runtime import cabi, toys, trees
from flashsim.runtime.chain import Chain
from flashsim.runtime.models import available
from flashsim.runtime.session import Device


@pytest.fixture(scope="module")
def models(runtime_toy_models, tmp_path_factory):
    """A private copy of the session's toy models (tests add .so files next to them)."""
    import shutil

    out = tmp_path_factory.mktemp("models")
    shutil.copytree(runtime_toy_models, out, dirs_exist_ok=True)
    return out


def test_gradient_boosting_equivalent_has_the_same_trees(models):
    path = models / "acceptance.onnx"
    gbc = scikinc.gbc_from_onnx(onnx.load(str(path)))
    x = toys.gun_batch(2000, 9).matrix(toys.ACC_FEATURES).numpy()
    rows = cabi.parity_rows(path, [("x", x.shape[1])], 2000, np.random.default_rng(0), x=x)
    ref = cabi.onnx_reference(path, rows, [("x", x.shape[1])])
    np.testing.assert_allclose(gbc.predict_proba(rows), ref, atol=2e-6)
    node = trees.find_tree_node(onnx.load(str(path)))
    assert gbc.n_estimators_ == len(set(trees.node_attributes(node)["nodes_treeids"]))


def test_dense_layers_are_read_with_their_weights(models):
    path = models / "resolution.onnx"
    net = scikinc.net_layers(onnx.load(str(path)))
    assert [k.shape[1] for k, *_ in net.layers] == [32, 32, 32, len(toys.RES_OUTPUTS)]
    assert [a for *_, a, _ in net.layers] == ["relu", "relu", "relu", "linear"]
    b = toys.gun_batch(500, 2)
    b.set("type", torch.full((500,), 4, dtype=torch.int32))
    feeds = {"x": b.matrix(toys.RES_FEATURES).numpy(), "noise": np.random.default_rng(1).standard_normal(
        (500, 4)).astype(np.float32)}
    first, last = scikinc.intermediate(path, feeds, [net.first_input, net.last_output])
    with torch.no_grad():
        ours = bench._torch_layers(net)(torch.from_numpy(first)).numpy()
    np.testing.assert_allclose(ours, last, rtol=1e-5, atol=1e-5 * np.abs(last).max())
    # the classifier's graph ends in a softmax, which the equivalent reproduces
    eff = scikinc.net_layers(onnx.load(str(models / "efficiency.onnx")))
    assert eff.softmax


def test_c_driver_replays_the_chain_calls(models, tmp_path):
    refs = available(["acceptance", "resolution"], models)
    chain = Chain(refs, Device("cpu"), threads=1)
    cols = bench._gun(3000, 5)
    traced = bench._trace(chain, cols)
    assert set(traced) == set(refs)
    assert len(traced["acceptance"][1]) == 3000
    assert 0 < len(traced["resolution"][1]) < 3000  # gated stages see fewer rows
    libs = {}
    for name, ref in refs.items():
        art = cabi.build(ref.onnx, tmp_path / f"{name}.so", name=name)
        libs[name] = (art.so, art.symbol)
    tools = bench._tools(tmp_path)
    n_out = {n: chain.models[n].n_out for n in refs}
    res = bench._per_particle(tools, libs, traced, n_out, 3000, tmp_path, "t")
    assert res["chain"] > 0 and set(res["models"]) == set(refs)
    plan = (tmp_path / "t_plan.txt").read_text().split("\n")
    run = subprocess.run([str(tools["driver"]), str(tmp_path / "t_plan.txt")], capture_output=True, text=True,
                         check=True)
    stats = json.loads(run.stdout)
    assert stats["calls"] == sum(len(r) for _, r in traced.values())
    assert stats["particles"] == int(plan[0])


def test_flow_generator_graph_is_read_as_one_repeated_block(tmp_path):
    """mlcore's flow-matching generator: SiLU residual MLP applied 2 x ode_steps times, quantile transforms."""
    from flashsim.export import export_torch
    from flashsim.models.generative import DEFAULTS, PhysicalGenerator, build_core
    from flashsim.preprocessing import QuantileTransform

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(500, 5)), rng.normal(size=(500, 3))
    core = build_core("flow", 5, 3, {**DEFAULTS, "width": 16, "depth": 4, "ode_steps": 3})
    gen = PhysicalGenerator(QuantileTransform.fit(x, n_knots=20), core, QuantileTransform.fit(y, n_knots=20).inverse())
    export_torch(gen, tmp_path / "flow.onnx", 5, 3)
    net = scikinc.net_layers(onnx.load(str(tmp_path / "flow.onnx")))
    assert net.repeats == 6 and net.residual and not net.exact
    assert [a for *_, a, _ in net.layers] == ["silu"] * 5 + ["linear"]
    assert net.layers[0][0].shape == (3 + 3 + 5, 16) and net.n_quantiles == 20
    # the torch reference of the same layers computes what the graph's first block computes without the skips
    seq = bench._torch_layers(net)
    assert sum(isinstance(m, torch.nn.SiLU) for m in seq) == 5
    # the bf16 roofline counts every dense layer the graph runs per particle: 6 layers x 6 ODE evaluations
    shapes = bench.dense_shapes(onnx.load(str(tmp_path / "flow.onnx")))
    assert sum(shapes.values()) == 36 and shapes[(11, 16)] == 6 and shapes[(16, 3)] == 6


def _two_block_generator(tmp_path):
    """A PID-style generator: two autoregressive flow blocks (the second conditioned on the first's outputs)."""
    from flashsim.export import export_torch
    from flashsim.models.generative import DEFAULTS, FlowGenerator, PhysicalGenerator
    from flashsim.models.pid.generator import BlockCore
    from flashsim.preprocessing import QuantileTransform

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(500, 4)), rng.normal(size=(500, 5))
    cfg = {**DEFAULTS, "width": 16, "depth": 3, "ode_steps": 2}
    core = BlockCore([FlowGenerator(4, 2, cfg), FlowGenerator(6, 3, cfg)], [[0, 1], [2, 3, 4]], 5)
    gen = PhysicalGenerator(QuantileTransform.fit(x, n_knots=30), core, QuantileTransform.fit(y, n_knots=30).inverse())
    return export_torch(gen.eval(), tmp_path / "blocks.onnx", 4, 5), x, y


def test_autoregressive_flow_blocks_are_read_network_by_network(tmp_path):
    path, *_ = _two_block_generator(tmp_path)
    blocks = scikinc.net_blocks(onnx.load(str(path)))
    assert [b.repeats for b in blocks] == [4, 4] and all(b.n_quantiles == 30 for b in blocks)
    assert [b.layers[0][0].shape[0] for b in blocks] == [2 + 3 + 4, 3 + 3 + 4 + 2]
    assert scikinc._flow_blocks(blocks, 4, 5, 5) == ((2, 4, 9), (3, 4, 12))
    with pytest.raises(scikinc.NoEquivalent, match="2 networks"):
        scikinc.net_layers(onnx.load(str(path)))
    with pytest.raises(scikinc.NoEquivalent, match="flow layout"):  # conditions of another width
        scikinc._flow_blocks(blocks, 3, 5, 5)


def test_autoregressive_flow_blocks_get_a_scikinc_equivalent(tmp_path):
    """Their scikinC equivalent compiles and runs per particle (needs the `bench` extra: scikinC, keras)."""
    import ctypes

    pytest.importorskip("keras")
    pytest.importorskip("scikinC")
    path, x, y = _two_block_generator(tmp_path)
    rng = np.random.default_rng(1)
    st = scikinc.stage_from_onnx("blocks", path, x.astype(np.float32), 5, rng)
    assert st.flows == ((2, 4, 9), (3, 4, 12)) and st.repeats == 8 and "2 autoregressive blocks" in st.equivalence
    syms = scikinc.build_library([st], tmp_path / "blocks.so", tmp_path / "src")
    f = getattr(ctypes.CDLL(str(tmp_path / "blocks.so")), syms["blocks"])
    out = (ctypes.c_float * 5)()
    inp = np.ascontiguousarray(np.concatenate([x[:1], rng.normal(size=(1, 5))], 1), dtype=np.float32)
    f(out, inp.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    got = np.array(out[:])
    assert np.all(np.isfinite(got)) and np.all((got >= y.min(0) - 1e-3) & (got <= y.max(0) + 1e-3))


def test_device_profile_runs_on_the_cpu_path(models):
    """The GPU half of the benchmark (chain IO binding vs host copies, per-model sweeps, tensor-form trees beside
    the stock kernel, bf16 reference) is device-generic: run it on the CPU so CI executes every line of it."""
    from flashsim.runtime.chain import ChainSpec

    spec = ChainSpec()
    refs = available(spec.names(), models)
    cols = bench._gun(1500, 4)
    cpu = Device("cpu")
    traced = bench._trace(Chain(refs, cpu, spec=spec, threads=1), cols)
    per_model_cpu = {name: {"onnx_1core_batched": 1.0, "onnx_allcores_batched": 1e12} for name in traced}
    res = bench.device_profile(refs, spec, cols, traced, per_model_cpu, {"sweep": (100, 2000), "min_time": 0.01}, cpu)
    assert set(res["chain"]) == {"100", "2000"}
    assert all(v["io_binding"] > 0 and v["host_io"] > 0 for v in res["chain"].values())
    assert set(res["per_model"]) == set(traced)
    acc = res["per_model"]["acceptance"]
    assert acc["bf16_rows_per_s"] is None and set(acc["tree_ensemble_kernel_by_batch"]) == {"100", "2000"}
    for name, m in res["per_model"].items():
        assert m["winner_at_largest_batch"] == "cpu"  # nothing beats 1e12 rows/s
        if name != "acceptance":
            assert m["bf16_rows_per_s"] > 0 and m["dense_layers_per_particle"] >= 2, name
    t = res["vs_bf16"]
    best = max(v["io_binding"] for v in res["chain"].values())
    assert t["chain_particles_per_s"] == best and t["value"] == pytest.approx(best / t["bf16_particles_per_s"])
    text = "\n".join(bench.device_lines(res))
    assert "| acceptance |" in text and "ratio" in text
