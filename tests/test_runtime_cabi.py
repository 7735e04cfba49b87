"""C-ABI shared objects (tl2cgen for trees, emx-onnx-cgen for networks) agree with onnxruntime, also via dlopen."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest
import torch

from flashsim.runtime import cabi, toys, trees


@pytest.fixture(scope="module")
def toy_models(runtime_toy_models, tmp_path_factory):
    """A private copy of the session's toy models (tests add .so files next to them)."""
    import shutil

    out = tmp_path_factory.mktemp("models")
    shutil.copytree(runtime_toy_models, out, dirs_exist_ok=True)
    return out


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    return cabi.build_checker(tmp_path_factory.mktemp("bin") / "cabi_check")


def _rows(tmp_path, path, art, n=2000, x=None):
    rng = np.random.default_rng(3)
    return cabi.parity_rows(path, art.inputs, n, rng, x=x)


def test_tree_route_matches_onnxruntime_on_thresholds(toy_models, tmp_path):
    path = toy_models / "acceptance.onnx"
    art = cabi.build(path, tmp_path / "acceptance.so", name="acceptance")
    assert art.route == "tl2cgen" and art.n_in == len(toys.ACC_FEATURES) and art.n_out == 2
    b = toys.gun_batch(500, 11)
    rows = _rows(tmp_path, path, art, x=b.matrix(toys.ACC_FEATURES).numpy())
    rows[:50, 3] = np.nan  # missing values follow the trees' default directions
    par = cabi.parity(art, path, rows)
    assert par["nan_mismatch"] == 0
    assert par["max_abs"] < 1e-6, par
    # the rows do sit on split thresholds
    node = trees.find_tree_node(onnx.load(str(path)))
    thr = set(np.asarray(trees.node_attributes(node)["nodes_values"], np.float32).tolist())
    assert np.mean([v in thr for v in rows[:, 5]]) > 0.1


def test_network_route_matches_onnxruntime(toy_models, tmp_path):
    path = toy_models / "resolution.onnx"
    art = cabi.build(path, tmp_path / "resolution.so", name="resolution")
    assert art.route == "emx-onnx-cgen"
    assert [n for n, _ in art.inputs] == ["x", "noise"]
    b = toys.gun_batch(500, 12)
    b.set("type", torch.full((500,), 3, dtype=torch.int32))
    par = cabi.parity(art, path, _rows(tmp_path, path, art, x=b.matrix(toys.RES_FEATURES).numpy()))
    assert par["nan_mismatch"] == 0
    assert par["max_abs"] <= 1e-5 * par["scale"], par


@pytest.fixture(scope="module")
def pid_k(toy_models, tmp_path_factory):
    return cabi.build(toy_models / "pid_pipeline_K.onnx", tmp_path_factory.mktemp("so") / "pid_K.so",
                      name="pid_pipeline_K")


def test_dlopen_program_reproduces_onnxruntime(toy_models, tmp_path, checker, pid_k):
    path, art = toy_models / "pid_pipeline_K.onnx", pid_k
    rows = _rows(tmp_path, path, art, n=300, x=toys.gun_batch(300, 5).matrix(toys.PID_FEATURES).numpy())
    rows.tofile(tmp_path / "in.f32")
    res = subprocess.run([str(checker), art.so, art.symbol, str(tmp_path / "in.f32"), str(tmp_path / "out.f32")],
                         capture_output=True, text=True, check=True)
    stats = json.loads(res.stdout)
    assert stats["rows"] == 300 and stats["calls"] == 300
    assert stats["n_random"] == art.n_random == 3  # called through the three-argument GenerativePlugin form
    got = np.fromfile(tmp_path / "out.f32", np.float32).reshape(300, art.n_out)
    ref = cabi.onnx_reference(path, rows, art.inputs)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # only the ABI is exported: the generated internals stay hidden
    syms = subprocess.run(["nm", "-D", "--defined-only", art.so], capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in syms.splitlines() if " T " in line}
    assert exported == {art.symbol, f"{art.symbol}_batch", f"{art.symbol}_n_in", f"{art.symbol}_n_out",
                        f"{art.symbol}_n_random", f"{art.symbol}_packed"}


def test_generator_entry_point_takes_noise_as_third_argument(pid_k, toy_models):
    """SQLamarr's GenerativePlugin calls f(out, in, random): the noise is not read from ``in``."""
    import ctypes

    art = pid_k
    assert art.plugin == "GenerativePlugin" and art.signature.endswith("const float* random)")
    lib = ctypes.CDLL(art.so)
    f = getattr(lib, art.symbol)
    f.restype = ctypes.c_void_p
    f.argtypes = [ctypes.c_void_p] * 3
    rows = _rows(None, toy_models / "pid_pipeline_K.onnx", art, n=20,
                 x=toys.gun_batch(20, 6).matrix(toys.PID_FEATURES).numpy())
    n_x = art.n_in - art.n_random
    ref = cabi.onnx_reference(toy_models / "pid_pipeline_K.onnx", rows, art.inputs)
    for i in range(len(rows)):
        x = np.ascontiguousarray(rows[i, :n_x])  # exactly the features: reading past them would be a bug
        rnd = np.ascontiguousarray(rows[i, n_x:])
        out = np.empty(art.n_out, np.float32)
        f(out.ctypes.data, x.ctypes.data, rnd.ctypes.data)
        np.testing.assert_allclose(out, ref[i], rtol=1e-5, atol=1e-5)


def test_deterministic_models_keep_the_plugin_form(toy_models, tmp_path):
    art = cabi.build(toy_models / "efficiency.onnx", tmp_path / "efficiency.so", name="efficiency")
    assert art.n_random == 0 and art.plugin == "Plugin"
    syms = subprocess.run(["nm", "-D", "--defined-only", art.so], capture_output=True, text=True).stdout
    assert f"{art.symbol}_packed" not in syms


def test_wrong_width_is_refused(tmp_path, checker, pid_k):
    art = pid_k
    np.zeros((4, art.n_in + 1), np.float32).tofile(tmp_path / "in.f32")
    res = subprocess.run([str(checker), art.so, art.symbol, str(tmp_path / "in.f32"), str(tmp_path / "o.f32"),
                          str(art.n_in + 1), str(art.n_out)], capture_output=True, text=True)
    assert res.returncode == 2 and "n_in" in res.stderr
    with pytest.raises(ValueError, match="expected"):
        cabi.CModel(art.so, art.symbol)(np.zeros((2, art.n_in + 1), np.float32))
