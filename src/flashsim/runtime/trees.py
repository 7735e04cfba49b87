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


def node_attributes(node: onnx.NodeProto) -> dict:
    """The attributes of an ONNX node as plain Python values (tensors as lists, bytes decoded)."""
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


def is_tree_file(path) -> bool:
    """Whether the ONNX file at ``path`` is a single tree ensemble (plus pass-through plumbing)."""
    return find_tree_node(onnx.load(str(path))) is not None


def parse(model: onnx.ModelProto) -> tuple[TreeSpec, dict[int, dict[int, dict]], dict[tuple[int, int], np.ndarray]]:
    """``(spec, nodes, leaves)`` of an ONNX tree-ensemble graph: ``nodes[tree][node id]`` holds mode, feature,
    threshold, children and the missing-value direction; ``leaves[(tree, node id)]`` the per-margin weights.
    Raises UnsupportedTrees for anything else."""
    node = find_tree_node(model)
    if node is None:
        raise UnsupportedTrees("graph is not a single tree ensemble")
    a = node_attributes(node)
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
    spec = TreeSpec(
        n_features=n_features, n_margins=n_margins, n_out=n_out, kind=kind, post_transform=post,
        base_values=base, all_positive=bool(np.all(np.asarray(w_val) >= 0)),
        average=a.get("aggregate_function", "SUM") == "AVERAGE", n_trees=len(nodes),
    )
    return spec, nodes, leaves


def spec_and_model(model: onnx.ModelProto):
    """Build ``(TreeSpec, treelite.Model)`` from an ONNX tree-ensemble graph; raise UnsupportedTrees otherwise."""
    import treelite.model_builder as tmb

    spec, nodes, leaves = parse(model)
    n_features, n_margins, kind = spec.n_features, spec.n_margins, spec.kind
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
    return spec, builder.commit()


def _n_features(model: onnx.ModelProto) -> int:
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].dim_value:
        raise UnsupportedTrees(f"input {inp.name} must be [N, F] with a fixed F")
    return int(dims[1].dim_value)


# every test as ``s * x <= t'``: (negate x, threshold) for the test itself and for its complement (which is
# false on NaN too); ``x < t`` is ``x <= nextafter(t, -inf)`` in float32
_COMPLEMENT = {"BRANCH_LEQ": "BRANCH_GT", "BRANCH_LT": "BRANCH_GTE", "BRANCH_GTE": "BRANCH_LT",
               "BRANCH_GT": "BRANCH_LEQ"}
TENSOR_OPSET = 17


def _as_leq(mode: str, t: np.float32) -> tuple[bool, np.float32]:
    """``(negate, t')`` with ``x OP t  <=>  (-x if negate else x) <= t'`` for every float32 ``x`` (NaN: false)."""
    down = np.float32(-np.inf)
    return {"BRANCH_LEQ": (False, t), "BRANCH_LT": (False, np.nextafter(t, down)),
            "BRANCH_GTE": (True, -t), "BRANCH_GT": (True, np.nextafter(-t, down))}[mode]


def tensor_form(model: onnx.ModelProto, half: bool = False) -> onnx.ModelProto:
    """The same ensemble with standard ONNX operators only (Gather, LessOrEqual, MatMul, ArgMax), so that
    execution providers without a TreeEnsemble kernel (CUDA) run it on the device.

    The GEMM form of a tree: every internal node's test is one float32 comparison ``s * x[feature] <= t'``
    (:func:`_as_leq`). The distinct tests of the ensemble are evaluated once, on a gather of ``[x; -x; 0]``, and
    gathered per tree into ``d`` [T, I + 1, N], 0/1, whose last row is the constant test ``0 <= 0``. A node whose
    missing values take the true branch evaluates its complement instead, which is false on NaN, and ``1 - d`` is
    folded into the path matrix ``C`` [T, L, I + 1]: ``C[l, i]`` is +1 when leaf ``l`` lies under node ``i``'s
    true branch, -1 under its false branch (sign flipped for complemented nodes), and the constant column holds
    ``-D[l]``, the count of +1 entries. ``C @ d`` is then 0 at the reached leaf and negative at every other, so
    an ArgMax picks the leaf, a Gather its weights, and a sum over trees plus the base values and onnxruntime's
    post transform (the conventions of :class:`TreeSpec`) give ``y``. The product holds small integers only:
    exact in float16 (``half``: halves the memory traffic of the two largest tensors, for GPUs) and in TF32.
    The leaf weights are summed in float32; only their order differs from the TreeEnsemble kernel. The graph has
    the input ``x`` and the output ``y``.
    """
    spec, nodes, leaves = parse(model)
    modes = {nd["mode"] for tree in nodes.values() for nd in tree.values()} - {"LEAF"}
    if not modes <= set(_COMPLEMENT):
        raise UnsupportedTrees(f"node modes {sorted(modes - set(_COMPLEMENT))} have no tensor form")
    trees = [_paths(nodes[t]) for t in sorted(nodes)]
    n_t, n_f, n_m = len(trees), spec.n_features, spec.n_margins
    n_i = max(len(inner) for inner, _ in trees) + 1  # the last slot: the constant test
    n_l = max(len(paths) for _, paths in trees)
    tests: dict[tuple[int, float], int] = {(2 * n_f, 0.0): 0}  # (row of [x; -x; 0], threshold) -> test index
    sel = np.zeros((n_t, n_i), np.int64)  # the test of each node slot; padding slots: the constant test
    paths_c = np.zeros((n_t, n_l, n_i), np.float32)  # C; padding leaves: only -(n_i) in the constant column
    paths_c[:, :, -1] = -n_i
    vals = np.zeros((n_t, n_l, n_m), np.float64)
    for k, (t, (inner, paths)) in enumerate(zip(sorted(nodes), trees, strict=True)):
        pos = {nid: i for i, nid in enumerate(inner)}
        flip = np.zeros(n_i, bool)
        for i, nid in enumerate(inner):
            nd = nodes[t][nid]
            flip[i] = nd["missing_true"]
            negate, thr = _as_leq(_COMPLEMENT[nd["mode"]] if flip[i] else nd["mode"], np.float32(nd["value"]))
            sel[k, i] = tests.setdefault((int(nd["feature"]) + (n_f if negate else 0), float(thr)), len(tests))
        for j, (leaf, path) in enumerate(paths.items()):
            paths_c[k, j, -1] = 0.0
            for nid, went_true in path:
                c = 1.0 if went_true else -1.0
                paths_c[k, j, pos[nid]] = -c if flip[pos[nid]] else c
            paths_c[k, j, -1] = -paths_c[k, j].clip(min=0).sum()
            vals[k, j] = leaves.get((t, leaf), np.zeros(n_m))
    if spec.average:
        vals /= n_t
    if len(spec.base_values) > n_m:
        raise UnsupportedTrees("more base values than score columns")
    base = np.zeros(n_m, np.float32)
    base[:len(spec.base_values)] = spec.base_values

    x_name = model.graph.input[0].name
    small = np.float16 if half else np.float32
    consts = {"test_row": np.asarray([r for r, _ in tests], np.int64),
              "test_thr": np.asarray([t for _, t in tests], np.float32).reshape(-1, 1),
              "sel": sel.reshape(-1), "paths": paths_c.astype(small),
              "leaf_base": (np.arange(n_t, dtype=np.int64) * n_l).reshape(-1, 1),
              "vals": vals.reshape(n_t * n_l, n_m).astype(np.float32), "base": base,
              "shape_tin": np.asarray([n_t, n_i, -1], np.int64), "axis0": np.asarray([0], np.int64),
              "one": np.asarray([1], np.int64), "two": np.asarray([2], np.int64)}
    mk = helper.make_node
    ops = [mk("Transpose", [x_name], ["x_t"], perm=[1, 0]),  # [F, N]: node features are whole rows
           mk("Neg", ["x_t"], ["x_neg"]),
           mk("Shape", ["x_t"], ["fn"]),
           mk("Slice", ["fn", "one", "two"], ["n"]),
           mk("Concat", ["one", "n"], ["zero_shape"], axis=0),
           mk("ConstantOfShape", ["zero_shape"], ["zero"],
              value=numpy_helper.from_array(np.zeros(1, np.float32))),  # [1, N]
           mk("Concat", ["x_t", "x_neg", "zero"], ["x_pm"], axis=0),  # [2F + 1, N]
           mk("Gather", ["x_pm", "test_row"], ["xu"], axis=0),  # [U, N]: each distinct test once
           mk("LessOrEqual", ["xu", "test_thr"], ["test_u"]),
           mk("Gather", ["test_u", "sel"], ["test"], axis=0),  # [T*(I+1), N]
           mk("Cast", ["test"], ["d_flat"], to=onnx.TensorProto.FLOAT16 if half else onnx.TensorProto.FLOAT),
           mk("Reshape", ["d_flat", "shape_tin"], ["d"]),  # [T, I+1, N]
           mk("MatMul", ["paths", "d"], ["score"]),  # [T, L, N]: 0 at the reached leaf, < 0 elsewhere
           mk("ArgMax", ["score"], ["leaf"], axis=1, keepdims=0),  # [T, N]
           mk("Add", ["leaf", "leaf_base"], ["row"]),
           mk("Gather", ["vals", "row"], ["w"], axis=0),  # [T, N, M]
           mk("ReduceSum", ["w", "axis0"], ["margin"], keepdims=0),  # [N, M]
           mk("Add", ["margin", "base"], ["m"])]
    post = spec.post_transform
    if spec.kind == "classifier" and spec.n_margins == 1:  # binary, one score column -> [negative, positive]
        if post == "LOGISTIC":
            ops += [mk("Neg", ["m"], ["neg"]), mk("Sigmoid", ["neg"], ["p0"]), mk("Sigmoid", ["m"], ["p1"])]
        elif post == "NONE":
            consts["one"] = np.asarray(1.0, np.float32)
            ops += [mk("Sub", ["one", "m"], ["p0"]) if spec.all_positive else mk("Neg", ["m"], ["p0"]),
                    mk("Identity", ["m"], ["p1"])]
        else:
            raise UnsupportedTrees(f"binary tree classifier with post_transform {post}")
        ops.append(mk("Concat", ["p0", "p1"], ["y"], axis=1))
    else:
        ops.append(mk({"NONE": "Identity", "LOGISTIC": "Sigmoid", "SOFTMAX": "Softmax"}[post], ["m"], ["y"]))
    graph = helper.make_graph(
        ops, "tree_ensemble_tensor_form",
        [helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT, ["N", spec.n_features])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", spec.n_out])],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in consts.items()])
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TENSOR_OPSET)],
                            producer_name="flashsim.runtime.trees")
    out.ir_version = min(model.ir_version, out.ir_version)  # what the runtime that read ``model`` accepts
    onnx.checker.check_model(out)
    return out


def _paths(tree: dict[int, dict]) -> tuple[list[int], dict[int, list[tuple[int, bool]]]]:
    """Internal node ids of one tree and, per leaf, its ancestors with the branch taken (True: the true branch)."""
    children = {c for nd in tree.values() if nd["mode"] != "LEAF" for c in (nd["true"], nd["false"])}
    (root,) = set(tree) - children
    inner, paths, stack = [], {}, [(root, [])]
    while stack:
        nid, path = stack.pop()
        nd = tree[nid]
        if nd["mode"] == "LEAF":
            paths[nid] = path
        else:
            inner.append(nid)
            stack += [(nd["false"], [*path, (nid, False)]), (nd["true"], [*path, (nid, True)])]
    return inner, paths
