"""ONNX tree ensembles (``ai.onnx.ml`` TreeEnsembleClassifier / TreeEnsembleRegressor) as treelite models.

The ONNX file is the one source of truth: the trees are rebuilt node by node with float32 thresholds (as
onnxruntime compares them), so the tl2cgen-compiled C agrees with onnxruntime on rows that sit exactly on a
split. Only the raw per-column sums (margins) come from treelite; base values and the post transform are
applied by the C wrapper with onnxruntime's conventions (see :class:`TreeSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
# nodes that may surround the ensemble without changing the numbers (onnxmltools' label/probability plumbing)
_PASSTHROUGH = {"Identity", "Cast", "Mul", "ZipMap"}
_OPNAMES = {"BRANCH_LEQ": "<=", "BRANCH_LT": "<", "BRANCH_GTE": ">=", "BRANCH_GT": ">", "BRANCH_EQ": "=="}
POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX")


class UnsupportedTrees(ValueError):
    """The graph is not a plain tree ensemble this route can compile (use the generic network route)."""


@dataclass
class TreeSpec:
    """What the C wrapper needs besides the compiled trees."""

    n_features: int
    n_margins: int  # columns predicted by the trees (1 for a binary classifier with one score column)
    n_out: int  # columns of the ONNX output y
    kind: str  # "classifier" | "regressor"
    post_transform: str
    base_values: list[float] = field(default_factory=list)
    all_positive: bool = False  # binary classifier with non-negative weights: y = [1 - s, s] instead of [-s, s]
    average: bool = False
    n_trees: int = 0


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v).tolist()
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


def find_tree_node(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The single tree-ensemble node when the graph is one ensemble plus pass-through plumbing, else None."""
    g = model.graph
    trees = [n for n in g.node if n.op_type in TREE_OPS]
    if len(trees) != 1:
        return None
    for n in g.node:
        if n.op_type in TREE_OPS:
            continue
        if n.op_type not in _PASSTHROUGH:
            return None
        if n.op_type == "Mul":  # only a multiplication by the constant 1 (onnxmltools' probability passthrough)
            inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
            consts = [inits.get(i) for i in n.input]
            if not any(c is not None and np.all(c == 1) for c in consts):
                return None
    return trees[0]


def spec_and_model(model: onnx.ModelProto):
    """Build ``(TreeSpec, treelite.Model)`` from an ONNX tree-ensemble graph; raise UnsupportedTrees otherwise."""
    import treelite.model_builder as tmb

    node = find_tree_node(model)
    if node is None:
        raise UnsupportedTrees("graph is not a single tree ensemble")
    a = _attrs(node)
    n_features = _n_features(model)
    if node.op_type == "TreeEnsembleClassifier":
        kind = "classifier"
        labels = a.get("classlabels_int64s") or a.get("classlabels_strings") or []
        n_out = len(labels)
        w_tree, w_node, w_col, w_val = (a["class_treeids"], a["class_nodeids"], a["class_ids"], a["class_weights"])
    else:
        kind = "regressor"
        n_out = int(a.get("n_targets", 1))
        w_tree, w_node, w_col, w_val = (a["target_treeids"], a["target_nodeids"], a["target_ids"],
                                        a["target_weights"])
        if a.get("aggregate_function", "SUM") not in ("SUM", "AVERAGE"):
            raise UnsupportedTrees(f"aggregate_function {a['aggregate_function']}")
    post = a.get("post_transform", "NONE")
    if post not in POST_TRANSFORMS:
        raise UnsupportedTrees(f"post_transform {post}")
    values = a.get("nodes_values") or a.get("nodes_values_as_tensor")
    base = [float(v) for v in (a.get("base_values") or a.get("base_values_as_tensor") or [])]
    binary_single = kind == "classifier" and n_out == 2 and len(set(w_col)) == 1
    if binary_single and w_col[0] != 0 and w_col[0] != 1:
        raise UnsupportedTrees("binary classifier with an unexpected class id")
    n_margins = 1 if binary_single else n_out
    if kind == "classifier" and n_out == 2 and not binary_single:
        raise UnsupportedTrees("binary classifier with weights on both classes")

    # leaves: (tree, node) -> vector of per-column weights
    leaves: dict[tuple[int, int], np.ndarray] = {}
    for t, nid, c, w in zip(w_tree, w_node, w_col, w_val, strict=True):
        vec = leaves.setdefault((t, nid), np.zeros(n_margins))
        vec[0 if binary_single else c] += w
    nodes: dict[int, dict[int, dict]] = {}
    for i, t in enumerate(a["nodes_treeids"]):
        nodes.setdefault(t, {})[a["nodes_nodeids"][i]] = {
            "mode": a["nodes_modes"][i], "feature": a["nodes_featureids"][i], "value": values[i],
            "true": a["nodes_truenodeids"][i], "false": a["nodes_falsenodeids"][i],
            "missing_true": bool((a.get("nodes_missing_value_tracks_true") or [0] * len(values))[i]),
        }
    tree_ids = sorted(nodes)
    vector = n_margins > 1
    builder = tmb.ModelBuilder(
        threshold_type="float32", leaf_output_type="float32",
        metadata=tmb.Metadata(
            num_feature=n_features,
            task_type="kMultiClf" if (kind == "classifier" and vector) else
            ("kBinaryClf" if kind == "classifier" else "kRegressor"),
            average_tree_output=False,
            num_target=1 if (kind == "classifier" or not vector) else n_margins,
            num_class=[n_margins] if (kind == "classifier" and vector) else [1] * (1 if not vector else n_margins),
            leaf_vector_shape=(1, n_margins) if (kind == "classifier" and vector) else
            ((n_margins, 1) if vector else (1, 1)),
        ),
        tree_annotation=tmb.TreeAnnotation(num_tree=len(tree_ids), target_id=[-1 if vector else 0] * len(tree_ids),
                                           class_id=[-1 if vector else 0] * len(tree_ids)),
        postprocessor=tmb.PostProcessorFunc(name="identity_multiclass" if vector else "identity"),
        base_scores=[0.0] * n_margins,
    )
    f32 = np.float32
    for t in tree_ids:
        builder.start_tree()
        for nid, nd in sorted(nodes[t].items()):
            builder.start_node(nid)
            if nd["mode"] == "LEAF":
                vec = leaves.get((t, nid), np.zeros(n_margins)).astype(f32)
                builder.leaf([float(v) for v in vec] if vector else float(vec[0]))
            else:
                if nd["mode"] not in _OPNAMES:
                    raise UnsupportedTrees(f"node mode {nd['mode']}")
                builder.numerical_test(int(nd["feature"]), float(f32(nd["value"])), default_left=nd["missing_true"],
                                       opname=_OPNAMES[nd["mode"]], left_child_key=int(nd["true"]),
                                       right_child_key=int(nd["false"]))
            builder.end_node()
        builder.end_tree()
    spec = TreeSpec(
        n_features=n_features, n_margins=n_margins, n_out=n_out, kind=kind, post_transform=post,
        base_values=base, all_positive=bool(np.all(np.asarray(w_val) >= 0)),
        average=a.get("aggregate_function", "SUM") == "AVERAGE", n_trees=len(tree_ids),
    )
    return spec, builder.commit()


def _n_features(model: onnx.ModelProto) -> int:
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].dim_value:
        raise UnsupportedTrees(f"input {inp.name} must be [N, F] with a fixed F")
    return int(dims[1].dim_value)
