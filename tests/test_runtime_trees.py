"""The tensor (GEMM) form of tree ensembles reproduces ONNX Runtime's TreeEnsemble kernel, and the chain uses it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from flashsim.runtime import cabi, toys, trees


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = "y" if "y" in [o.name for o in sess.get_outputs()] else sess.get_outputs()[-1].name
    return sess.run([out], {name: x})[0]


def _assert_same(model: onnx.ModelProto, x: np.ndarray, half: bool = False) -> None:
    tensor = trees.tensor_form(model, half=half)
    assert not {n.op_type for n in tensor.graph.node} & set(trees.TREE_OPS)
    want, got = _run(model, x), _run(tensor, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _edge_rows(path, n: int = 4000) -> np.ndarray:
    """Gun rows moved onto split thresholds, some with missing features, some all missing."""
    x = toys.gun_batch(500, 11).matrix(toys.ACC_FEATURES).numpy()
    rows = cabi.parity_rows(path, [("x", x.shape[1])], n, np.random.default_rng(3), x=x)
    rows[:300, 3] = np.nan  # missing values follow each node's default direction
    rows[300:400] = np.nan
    return rows


@pytest.mark.parametrize("half", [False, True])
def test_classifier_on_thresholds_and_missing_values(runtime_toy_models, half):
    path = runtime_toy_models / "acceptance.onnx"
    model = onnx.load(str(path))
    rows = _edge_rows(path)
    _assert_same(model, rows, half)
    node = trees.find_tree_node(model)  # the rows do sit on split thresholds
    thr = set(np.asarray(trees.node_attributes(node)["nodes_values"], np.float32).tolist())
    assert np.mean([v in thr for v in rows[:, 5]]) > 0.1


@pytest.mark.parametrize("task", ["multiclass", "regression", "average"])
def test_lightgbm_multiclass_and_regressor(task):
    import lightgbm as lgb
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 5)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # trains missing-value directions
    if task == "multiclass":
        y = np.digitize(np.nan_to_num(x[:, 0] + 0.5 * x[:, 1]), [-0.5, 0.5])
        est = lgb.LGBMClassifier(n_estimators=20, num_leaves=15, verbose=-1).fit(x, y)
    else:
        y = np.nan_to_num(x[:, 0]) ** 2 + np.nan_to_num(x[:, 2])
        est = lgb.LGBMRegressor(n_estimators=20, num_leaves=15, verbose=-1).fit(x, y)
    model = onnxmltools.convert_lightgbm(est, initial_types=[("x", FloatTensorType([None, 5]))], zipmap=False)
    if task == "average":  # a random-forest-style ensemble: the kernel averages the trees
        _set_attr(trees.find_tree_node(model), "aggregate_function", "AVERAGE")
    test = rng.standard_normal((2000, 5)).astype(np.float32)
    test[:200, 1] = np.nan
    _assert_same(model, test, half=task == "multiclass")


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


@pytest.mark.parametrize("half", [False, True])
def test_every_comparison_and_missing_direction(runtime_toy_models, half):
    """Nodes of all four inequality modes, each with missing values going either way, in one ensemble."""
    path = runtime_toy_models / "acceptance.onnx"
    model = onnx.load(str(path))
    node = trees.find_tree_node(model)
    a = trees.node_attributes(node)
    rng = np.random.default_rng(5)
    leaf = np.asarray(a["nodes_modes"]) == "LEAF"
    modes = rng.choice(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT"], size=len(leaf))
    _set_attr(node, "nodes_modes", [m.encode() for m in np.where(leaf, "LEAF", modes)])
    _set_attr(node, "nodes_missing_value_tracks_true", rng.integers(0, 2, len(leaf)).tolist())
    _assert_same(model, _edge_rows(path), half)


def test_equality_splits_keep_the_tree_kernel(runtime_toy_models, caplog):
    from flashsim.runtime.session import Device, OrtModel

    model = onnx.load(str(runtime_toy_models / "acceptance.onnx"))
    node = trees.find_tree_node(model)
    modes = trees.node_attributes(node)["nodes_modes"]
    _set_attr(node, "nodes_modes", [(m if m == "LEAF" or i % 3 else "BRANCH_EQ").encode()
                                    for i, m in enumerate(modes)])
    with pytest.raises(trees.UnsupportedTrees, match="BRANCH_EQ"):
        trees.tensor_form(model)
    path = runtime_toy_models.parent / "acceptance_eq.onnx"
    onnx.save(model, str(path))
    m = OrtModel(path, Device("cpu"), tensor_trees=True)
    assert "no tensor form" in caplog.text
    assert {n.op_type for n in onnx.load(str(path)).graph.node} & set(trees.TREE_OPS)
    x = toys.gun_batch(200, 2).matrix(toys.ACC_FEATURES)
    np.testing.assert_array_equal(m.run(x).numpy(), _run(model, x.numpy()))


def test_networks_are_not_trees(runtime_toy_models):
    with pytest.raises(trees.UnsupportedTrees):
        trees.tensor_form(onnx.load(str(runtime_toy_models / "efficiency.onnx")))
