"""The per-particle C deployment path that Lamarr uses, built with scikinC from the same weights as our models.

Bench-only (needs the ``bench`` extra: scikinC, Keras 3 with ``KERAS_BACKEND=torch``; no TensorFlow):

- a tree ensemble (ONNX ``TreeEnsembleClassifier``, binary) becomes a scikit-learn
  ``GradientBoostingClassifier`` holding the very same trees (float32 thresholds, learning rate 1, zero init),
  checked against onnxruntime;
- a network becomes a Keras ``Sequential`` of ``Dense`` layers with the ONNX graph's ``Gemm`` / ``MatMul`` weights
  and activations, checked against the graph's own pre-activation tensors (skip connections, if any, are dropped:
  Sequential cannot express them; they cost one vector add per layer); a flow generator's velocity network runs
  in a C loop of midpoint ODE steps, and a PID generator's autoregressive blocks each get their own Sequential,
  run in turn on the conditions and the earlier blocks' outputs;
- the preprocessing inside our graphs is replaced, as in Lamarr, by scikit-learn ``QuantileTransformer``\\ s (to
  normal) of the conditions and, for generative models, the inverse transform of the outputs, with the same
  number of quantiles as our graph's transform.

scikinC transpiles each to C++ with ``extern "C"`` entry points; a short glue function per model (what Lamarr's
C++ does) chains transform -> network -> inverse transform behind ``float* f(float* out, const float* in)``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

os.environ.setdefault("KERAS_BACKEND", "torch")

_ACT = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Elu": "elu"}  # ONNX op -> Keras activation


class NoEquivalent(ValueError):
    """The ONNX graph has no scikinC equivalent (e.g. concatenating skip connections)."""


def gbc_from_onnx(model: onnx.ModelProto):
    """A fitted-looking ``GradientBoostingClassifier`` with the ONNX binary tree ensemble's trees."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.tree import DecisionTreeRegressor
    from sklearn.tree._tree import Tree

    from flashsim.runtime import trees

    node = trees.find_tree_node(model)
    if node is None or node.op_type != "TreeEnsembleClassifier":
        raise NoEquivalent("not a tree-ensemble classifier")
    spec, _ = trees.spec_and_model(model)
    if spec.n_margins != 1 or spec.post_transform != "LOGISTIC" or any(spec.base_values):
        raise NoEquivalent("only binary LOGISTIC ensembles without base values map onto scikit-learn")
    a = trees.node_attributes(node)
    if set(a["nodes_modes"]) - {"BRANCH_LEQ", "LEAF"}:
        raise NoEquivalent("scikit-learn trees only test x <= threshold")
    vals = np.asarray(a.get("nodes_values") or a.get("nodes_values_as_tensor"), np.float32)
    leaf_w: dict[tuple[int, int], float] = {}
    for t, nid, w in zip(a["class_treeids"], a["class_nodeids"], a["class_weights"], strict=True):
        leaf_w[(t, nid)] = leaf_w.get((t, nid), 0.0) + w
    by_tree: dict[int, list[int]] = {}
    for i, t in enumerate(a["nodes_treeids"]):
        by_tree.setdefault(t, []).append(i)
    n_features = spec.n_features
    dtype = DecisionTreeRegressor(max_depth=1).fit(np.zeros((2, 1)), [0, 1]).tree_.__getstate__()["nodes"].dtype
    estimators, max_depth = [], 1
    for t in sorted(by_tree):
        idx = {a["nodes_nodeids"][i]: i for i in by_tree[t]}
        order, depth_of, k = [0], {0: 0}, 0  # breadth-first renumbering from the root (node id 0)
        while k < len(order):
            i = idx[order[k]]
            if a["nodes_modes"][i] != "LEAF":
                for child in (a["nodes_truenodeids"][i], a["nodes_falsenodeids"][i]):
                    depth_of[child] = depth_of[order[k]] + 1
                    order.append(child)
            k += 1
        pos = {nid: j for j, nid in enumerate(order)}
        nodes = np.zeros(len(order), dtype=dtype)
        values = np.zeros((len(order), 1, 1))
        for j, nid in enumerate(order):
            i = idx[nid]
            if a["nodes_modes"][i] == "LEAF":
                nodes[j] = (-1, -1, -2, -2.0, 0.0, 1, 1.0, 0)
                values[j, 0, 0] = np.float32(leaf_w.get((t, nid), 0.0))
            else:
                nodes[j] = (pos[a["nodes_truenodeids"][i]], pos[a["nodes_falsenodeids"][i]], a["nodes_featureids"][i],
                            float(vals[i]), 0.0, 1, 1.0, int(bool((a.get("nodes_missing_value_tracks_true")
                                                                   or [0] * len(vals))[i])))
        depth = max(depth_of.values())
        max_depth = max(max_depth, depth)
        tree = Tree(n_features, np.array([1], dtype=np.intp), 1)
        tree.__setstate__({"max_depth": depth, "node_count": len(order), "nodes": nodes, "values": values})
        est = DecisionTreeRegressor(max_depth=depth)
        est.tree_, est.n_features_in_, est.n_outputs_ = tree, n_features, 1
        estimators.append([est])
    gbc = GradientBoostingClassifier(n_estimators=len(estimators), learning_rate=1.0, max_depth=max_depth,
                                     init="zero")
    gbc.estimators_ = np.array(estimators, dtype=object)
    gbc.classes_ = np.array([0, 1])
    gbc.n_classes_ = 2
    gbc.n_features_in_ = n_features
    gbc.n_estimators_ = len(estimators)
    gbc.n_trees_per_iteration_ = 1
    gbc.init_ = "zero"
    gbc.train_score_ = np.zeros(len(estimators))
    gbc._loss = gbc._get_loss(sample_weight=None)
    return gbc


@dataclass
class NetLayers:
    """Dense layers read from an ONNX graph: (kernel [in, out], bias, activation, leaky slope) in order."""

    layers: list[tuple[np.ndarray, np.ndarray, str, float]]
    first_input: str  # the tensor fed to the first dense layer
    last_output: str  # the tensor produced by the last dense layer (before any output transform)
    softmax: bool  # the graph ends with a softmax (classifier)
    n_quantiles: int  # knots of the input transform found in the graph (0 if none)
    residual: bool = False  # the graph adds skip connections (Sequential drops them: same cost, other values)
    repeats: int = 1  # the layer block is applied this many times (flow-matching ODE steps)

    @property
    def exact(self) -> bool:
        """Whether the Sequential reproduces the graph's numbers (not only its cost)."""
        return not self.residual and self.repeats == 1


def _activation(t: str, consumers: dict, init: dict) -> tuple[str, float, bool]:
    """(activation, leaky slope, through a residual add) applied to tensor ``t`` by its consumers."""
    cons = consumers.get(t, [])
    sig = [c for c in cons if c.op_type == "Sigmoid"]
    for c in cons:
        if c.op_type == "Mul" and sig and set(c.input) == {t, sig[0].output[0]}:
            return "silu", 0.0, False  # x * sigmoid(x), as torch exports SiLU
    for c in cons:
        if c.op_type in _ACT and not (c.op_type == "Sigmoid" and len(cons) > 1):
            return _ACT[c.op_type], 0.0, False
        if c.op_type == "LeakyRelu":
            alpha = next((onnx.helper.get_attribute_value(a) for a in c.attribute if a.name == "alpha"), 0.01)
            return "leaky_relu", float(alpha), False
    adds = [c for c in cons if c.op_type == "Add" and not any(i in init for i in c.input)]
    if adds:  # a residual connection: the activation (if any) follows the sum
        act, slope, _ = _activation(adds[0].output[0], consumers, init)
        return act, slope, True
    return "linear", 0.0, False


def net_layers(model: onnx.ModelProto) -> NetLayers:
    """The dense layers of an MLP-like ONNX graph with one network (see :func:`net_blocks`)."""
    blocks = net_blocks(model)
    if len(blocks) > 1:
        raise NoEquivalent(f"{len(blocks)} networks in the graph (autoregressive blocks)")
    return blocks[0]


def net_blocks(model: onnx.ModelProto) -> list[NetLayers]:
    """The dense layers of an ONNX graph (Gemm, or MatMul + Add, with constant weights), network by network.

    Recognises SiLU (``x * sigmoid(x)``), residual additions and blocks of layers applied repeatedly with the
    same weights (an unrolled ODE): per network, ``repeats`` counts the applications and ``layers`` holds one
    application. Several networks in a row (the autoregressive blocks of a PID generator) give several entries.
    """
    g = model.graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:  # Constant nodes hold weights too
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            init[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    layers, keys, inputs, outputs, residual = [], [], [], [], False
    for n in g.node:
        kernel = bias = None
        if n.op_type == "Gemm" and n.input[1] in init:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            w = init[n.input[1]]
            kernel = (w.T if attrs.get("transB", 0) else w) * attrs.get("alpha", 1.0)
            bias = init[n.input[2]] * attrs.get("beta", 1.0) if len(n.input) > 2 else np.zeros(kernel.shape[1])
            out = n.output[0]
        elif n.op_type == "MatMul" and n.input[1] in init and init[n.input[1]].ndim == 2:
            kernel = init[n.input[1]]
            out = n.output[0]
            add = [c for c in consumers.get(out, []) if c.op_type == "Add"]
            if add and any(i in init for i in add[0].input):
                bias = next(init[i] for i in add[0].input if i in init).reshape(-1)
                out = add[0].output[0]
            else:
                bias = np.zeros(kernel.shape[1])
        if kernel is None:
            continue
        act, slope, through_add = _activation(out, consumers, init)
        residual |= through_add
        inputs.append(n.input[0])
        outputs.append(out)
        keys.append(n.input[1])
        layers.append((np.asarray(kernel, np.float32), np.asarray(bias, np.float32), act, slope))
    if not layers:
        raise NoEquivalent("no dense layers in the graph")
    softmax = any(n.op_type == "Softmax" for n in g.node)
    n_in = sum(v.type.tensor_type.shape.dim[-1].dim_value for v in g.input if v.name == "x")
    n_q = _input_knots(init, n_in)
    blocks = []
    for start, period, repeats in _runs(keys):
        block = layers[start:start + period]
        for (k0, *_), (k1, *_) in itertools.pairwise(block):
            if k0.shape[1] != k1.shape[0]:
                raise NoEquivalent(f"layer widths {k0.shape[1]} -> {k1.shape[0]} do not chain (concatenating skips)")
        end = start + period * repeats - 1
        blocks.append(NetLayers(block, inputs[start], outputs[end], softmax, n_q, residual, repeats))
    return blocks


def _runs(keys: list[str]) -> list[tuple[int, int, int]]:
    """``(start, period, repeats)``: the sequence of weight names cut into runs of one block applied repeatedly."""
    runs, i = [], 0
    while i < len(keys):
        period = keys.index(keys[i], i + 1) - i if keys[i] in keys[i + 1:] else len(keys) - i
        block, repeats = keys[i:i + period], 1
        while keys[i + repeats * period:i + (repeats + 1) * period] == block:
            repeats += 1
        runs.append((i, period, repeats))
        i += period * repeats
    return runs


def _input_knots(init: dict[str, np.ndarray], n_in: int) -> int:
    """Knots of the graph's input quantile transform (0 if none): its block starts are an [n_in, M] table and its
    knots, block by block, an [n_in * M, B] table (padded with +inf) whose first column is that first table."""
    tables = [a for a in init.values() if a.ndim == 2 and a.dtype == np.float32]
    for coarse in (a for a in tables if a.shape[0] == n_in):
        for fine in (a for a in tables if a.shape[0] == n_in * coarse.shape[1]):
            if np.array_equal(fine[:, 0], coarse.reshape(-1)):  # each block starts at its coarse entry
                return int(np.isfinite(fine.reshape(n_in, -1)).sum(axis=1).max())
    return 0


def keras_sequential(net: NetLayers):
    """A Keras Sequential with the same dense weights and activations."""
    import keras

    seq = [keras.Input((net.layers[0][0].shape[0],))]
    for i, (k, _b, act, slope) in enumerate(net.layers):
        dense = keras.layers.Dense(k.shape[1], activation=act if act != "leaky_relu" else "linear", name=f"d{i}")
        seq.append(dense)
        if act == "leaky_relu":
            seq.append(keras.layers.LeakyReLU(negative_slope=slope, name=f"lrelu{i}"))
    if net.softmax:
        seq.append(keras.layers.Softmax(name="softmax"))
    m = keras.Sequential(seq)
    for i, (k, b, _, _) in enumerate(net.layers):
        m.get_layer(f"d{i}").set_weights([k, b])
    return m


def intermediate(model_path: str | Path, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Values of internal tensors of an ONNX graph (added as outputs) on ``feeds``."""
    import onnxruntime as ort

    m = onnx.load(str(model_path))
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(names, feeds)


@dataclass
class Stage:
    """One model of the per-particle chain as scikinC sees it."""

    name: str
    kind: str  # "gbdt" | "net"
    n_x: int
    n_noise: int
    n_out: int
    objects: dict  # scikinC name -> sklearn / keras object
    parity: float | None = None  # max |equivalent - ONNX| relative to its scale, where the numbers are comparable
    equivalence: str = "exact"  # "exact" (same numbers) or why only the cost is the same
    repeats: int = 1  # network applications per particle (flow ODE: 2 per midpoint step)
    flows: tuple[tuple[int, int, int], ...] = ()  # flow generators: (outputs, network calls, input width) per block


def stage_from_onnx(name: str, onnx_path: str | Path, x: np.ndarray, noise: int, rng: np.random.Generator) -> Stage:
    """scikinC objects equivalent to our model ``name`` (quantile transforms fitted on ``x``)."""
    from sklearn.preprocessing import QuantileTransformer

    from flashsim.runtime import trees
    from flashsim.runtime.cabi import onnx_reference

    model = onnx.load(str(onnx_path))
    sym = "".join(c if c.isalnum() else "_" for c in name)
    n_out = next(v.type.tensor_type.shape.dim[-1].dim_value for v in model.graph.output if v.name == "y")
    if trees.find_tree_node(model) is not None:
        gbc = gbc_from_onnx(model)
        ref = onnx_reference(onnx_path, x, [("x", x.shape[1])])
        dev = float(np.max(np.abs(gbc.predict_proba(x.astype(np.float32)) - ref)))
        return Stage(name, "gbdt", x.shape[1], 0, n_out, {f"{sym}_bdt": gbc}, dev)
    blocks = net_blocks(model)
    nx = x.shape[1]
    flows = _flow_blocks(blocks, nx, noise, n_out)
    net = blocks[0]
    if not flows:
        if len(blocks) > 1:
            raise NoEquivalent(f"{len(blocks)} networks in the graph that are not flow generators")
        if net.layers[0][0].shape[0] != nx + noise:
            raise NoEquivalent(f"first layer takes {net.layers[0][0].shape[0]} inputs, not conditions + noise = "
                               f"{nx + noise}")
    objs = {}
    nq = min(max(net.n_quantiles, 10), len(x)) if net.n_quantiles else min(1000, len(x))
    objs[f"{sym}_tX"] = QuantileTransformer(n_quantiles=nq, output_distribution="normal", subsample=len(x),
                                            random_state=0).fit(x)
    for k, block in enumerate(blocks):
        objs[f"{sym}_net{k or ''}"] = keras_sequential(block)
    feeds = {"x": x.astype(np.float32)}
    if noise:
        feeds["noise"] = rng.standard_normal((len(x), noise)).astype(np.float32)
    dev, why, calls = None, "exact", sum(b.repeats for b in blocks)
    if net.exact and len(blocks) == 1:
        first, last = intermediate(onnx_path, feeds, [net.first_input, net.last_output])
        ours = objs[f"{sym}_net"].predict(first, verbose=0, batch_size=4096)
        ref = last if not net.softmax else _softmax(last)
        dev = float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-30))
    else:
        why = "same layers and weights; " + ", ".join(
            w for w, on in (("skip connections dropped (not expressible as a Sequential)", net.residual),
                            (f"{len(blocks)} autoregressive blocks", len(blocks) > 1),
                            (f"{calls} network calls per particle (flow ODE)", calls > 1)) if on)
    if noise:  # generative: the outputs go through an inverse quantile transform, as in Lamarr
        y = intermediate(onnx_path, feeds, ["y"])[0]
        objs[f"{sym}_tY"] = QuantileTransformer(n_quantiles=nq, output_distribution="normal", subsample=len(y),
                                                random_state=0).fit(y)
    return Stage(name, "net", nx, noise, n_out, objs, dev, why, calls, flows)


def _flow_blocks(blocks: list[NetLayers], nx: int, noise: int, n_out: int) -> tuple[tuple[int, int, int], ...]:
    """``(outputs, calls, input width)`` per block when the graph is a flow generator (every block a velocity
    network on ``[y_k, t, sin(pi t), cos(pi t), conditions, earlier blocks' outputs]``, applied an even number of
    times: midpoint steps), else ``()``; NoEquivalent for a repeated block of another layout."""
    if all(b.repeats == 1 for b in blocks):
        return ()
    out, cond = [], nx
    for b in blocks:
        ny, w_in = b.layers[-1][0].shape[1], b.layers[0][0].shape[0]
        if b.repeats % 2 or w_in != ny + 3 + cond:
            raise NoEquivalent(f"a block applied {b.repeats} times with inputs of width {w_in}: not the flow layout "
                               "[y, t, sin(pi t), cos(pi t), conditions]")
        out.append((ny, b.repeats, w_in))
        cond += ny
    if noise != n_out or cond - nx != n_out:
        raise NoEquivalent(f"flow blocks generate {cond - nx} outputs from {noise} noise, not {n_out}")
    return tuple(out)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _glue(stage: Stage, sym: str) -> str:
    """Lamarr-style C glue: one ``float* f(float*, const float*)`` per model over scikinC's functions."""
    if stage.kind == "gbdt":
        return f'extern "C" float* {sym}(float* out, const float* in) {{ return {sym}_bdt(out, in); }}\n'
    nx, nz, ny = stage.n_x, stage.n_noise, stage.n_out
    if stage.flows:  # flow matching, block by block: midpoint ODE steps over the velocity network, from y = noise
        w_max = max(w for *_, w in stage.flows)
        body = [f'extern "C" float* {sym}(float* out, const float* in) {{',
                f"  float c[{nx + ny}], y[{ny}], ym[{ny}], v[{ny}], buf[{w_max}];",
                f"  {sym}_tX(c, in);"]
        done = 0
        for k, (nb, calls, _w) in enumerate(stage.flows):
            net, nc = f"{sym}_net{k or ''}", nx + done  # conditions: x and the earlier blocks' outputs
            body += [f"  for (int i = 0; i < {nb}; ++i) y[i] = in[{nx + done} + i];",
                     f"  for (int k = 0; k < {calls // 2}; ++k) {{",
                     f"    const float h = 1.0f / {calls // 2}, t = k * h, tm = t + 0.5f * h;",
                     f"    for (int i = 0; i < {nb}; ++i) buf[i] = y[i];",
                     _time_features(nb, "t"),
                     f"    for (int i = 0; i < {nc}; ++i) buf[{nb + 3} + i] = c[i];",
                     f"    {net}(v, buf);",
                     f"    for (int i = 0; i < {nb}; ++i) ym[i] = y[i] + 0.5f * h * v[i];",
                     f"    for (int i = 0; i < {nb}; ++i) buf[i] = ym[i];",
                     _time_features(nb, "tm"),
                     f"    {net}(v, buf);",
                     f"    for (int i = 0; i < {nb}; ++i) y[i] += h * v[i];",
                     "  }",
                     f"  for (int i = 0; i < {nb}; ++i) c[{nc} + i] = y[i];"]
            done += nb
        body += [f"  {sym}_tY_inverse(out, c + {nx});", "  return out;", "}"]
        return "\n".join(body) + "\n"
    w_in = nx + nz
    width = max(w_in, ny)
    body = [f'extern "C" float* {sym}(float* out, const float* in) {{',
            f"  float buf[{width}], res[{width}];",
            f"  {sym}_tX(buf, in);",
            f"  for (int i = {nx}; i < {w_in}; ++i) buf[i] = in[i];"]
    if nz:
        body += [f"  {sym}_net(res, buf);", f"  {sym}_tY_inverse(out, res);"]
    else:
        body += [f"  {sym}_net(out, buf);"]
    body += ["  return out;", "}"]
    return "\n".join(body) + "\n"


def _time_features(at: int, t: str) -> str:
    return f"    buf[{at}] = {t}; buf[{at + 1}] = sinf(3.14159265f * {t}); buf[{at + 2}] = cosf(3.14159265f * {t});"


def _scikinc_silu() -> None:
    """Teach scikinC's Dense converter the SiLU activation our networks use (x / (1 + exp(-x)), written like its
    sigmoid): without it scikinC refuses them. Applied once, at build time."""
    from scikinC.layers.BaseLayerConverter import BaseLayerConverter

    original = BaseLayerConverter.activate
    if getattr(original, "flashsim_silu", False):
        return

    def activate(self, x: str) -> str:
        act = self.layer.activation
        name = act if isinstance(act, str) else act.__name__
        return f"{x} = {x} / (1. + exp(-{x}));" if name in ("silu", "swish") else original(self, x)

    activate.flashsim_silu = True
    BaseLayerConverter.activate = activate


def build_library(stages: list[Stage], out_so: str | Path, workdir: str | Path,
                  cflags: tuple[str, ...] = ("-O3",), composites: dict[str, tuple[list[str], str]] | None = None
                  ) -> dict[str, str]:
    """Transpile every stage with scikinC, add the glue, compile one .so (gcc -O3); returns name -> symbol.

    ``composites``: name -> (symbols it calls, C glue), e.g. a PID pipeline over its four stages."""
    import scikinC

    _scikinc_silu()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sources, symbols = [], {}
    for st in stages:
        sym = "".join(c if c.isalnum() else "_" for c in st.name)
        parts = [scikinC.convert({k: v}) for k, v in st.objects.items()]
        src = workdir / f"{sym}.C"
        decls = "".join(f'extern "C" float* {k}(float*, const float*);\n' for k in st.objects)
        if st.kind == "net" and st.n_noise:
            decls += f'extern "C" float* {sym}_tY_inverse(float*, const float*);\n'
        src.write_text("\n".join(parts) + "\n" + decls + _glue(st, sym))
        sources.append(src)
        symbols[st.name] = sym
    for name, (calls, glue) in (composites or {}).items():
        sym = "".join(c if c.isalnum() else "_" for c in name)
        src = workdir / f"{sym}.C"
        decls = "".join(f'extern "C" float* {c}(float*, const float*);\n' for c in calls)
        src.write_text("#include <math.h>\n" + decls + glue)
        sources.append(src)
        symbols[name] = sym
    def compile_one(src: Path) -> Path:  # one object per model, in parallel: scikinC's tables compile slowly
        obj = src.with_suffix(".o")
        res = subprocess.run(["gcc", "-x", "c++", *cflags, "-fPIC", "-c", "-o", str(obj), str(src)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"scikinC output {src.name} does not compile:\n" + res.stderr[-2000:])
        return obj

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    res = subprocess.run(["gcc", "-shared", "-o", str(out_so), *map(str, objects), "-lm"], capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError("scikinC library does not link:\n" + res.stderr[-2000:])
    return symbols


# --- PID pipelines: Lamarr calls the four stage models per particle -----------------------------------------------
PIPELINE_STAGES = ("ismuon", "rich", "muon", "global")


def _flash_name(calib: str) -> str:
    """A PID stage's calibration-sample column name -> the pipeline's (flash-simulation) name."""
    try:
        from flashsim.models.pid.common import CALIB_TO_FLASH
    except ImportError:  # the PID family not installed: the same rule, spelled out
        CALIB_TO_FLASH = {}
    if calib in CALIB_TO_FLASH:
        return CALIB_TO_FLASH[calib]
    short = calib.replace("probe_Brunel_", "").replace("MC15TuneV1_", "")
    return {"P": "p", "ETA": "eta", "nTracks_Brunel": "nTracks", "trackcharge": "charge"}.get(short, short)


def pipeline_stages(name: str, card: dict, models_dir: str | Path, x: np.ndarray, noise: np.ndarray,
                    rng: np.random.Generator, muon_fill: float = 1.0) -> tuple[list[Stage], str, list[str]]:
    """The scikinC stages of a chained PID pipeline (its ``params.model.stages``) and the C glue that runs them
    per particle as the pipeline does: isMuon drawn from ``Phi(noise_0) < P(isMuon)``, RICH, MUON (only for
    isMuon tracks), GlobalPID on the bank of earlier outputs (muon LLs filled where isMuon is 0). Returns the
    stages, the glue and the stage symbols it calls."""
    import json

    from flashsim.runtime.cabi import onnx_reference
    from flashsim.runtime.models import parse_card

    stages_cfg = ((card.get("params") or {}).get("model") or {}).get("stages") or {}
    if set(stages_cfg) != set(PIPELINE_STAGES):
        raise NoEquivalent("not a PID pipeline with stages ismuon, rich, muon, global")
    models_dir = Path(models_dir)
    refs = {}
    for key in PIPELINE_STAGES:
        path = models_dir / f"{stages_cfg[key]}.onnx"
        if not path.exists():
            raise NoEquivalent(f"stage model {path} is missing")
        refs[key] = parse_card(stages_cfg[key], path, json.loads(path.with_suffix(".json").read_text()))
    # the bank of named columns, filled by running the pipeline itself on the traced rows
    pipe = parse_card(name, models_dir / f"{name}.onnx", card)
    y = onnx_reference(pipe.onnx, np.concatenate([x, noise], 1), [("x", x.shape[1]), ("noise", noise.shape[1])])
    bank_names = list(pipe.features) + list(pipe.outputs)
    bank = np.concatenate([x, y], 1).astype(np.float32)
    for m in ("MuonMuLL", "MuonBgLL"):
        if m in bank_names:
            bank_names.append(f"{m}_filled")
            col = bank[:, bank_names.index(m)]
            bank = np.concatenate([bank, np.where(np.isfinite(col), col, muon_fill)[:, None]], 1)
    index = {n: i for i, n in enumerate(bank_names)}
    stages, wiring = [], []
    for key in PIPELINE_STAGES:
        ref = refs[key]
        cols = [index[_flash_name(f)] for f in ref.features]
        xs = bank[:, cols]
        if key == "muon":
            xs = xs[bank[:, index["isMuon"]] > 0.5] if np.any(bank[:, index["isMuon"]] > 0.5) else xs
        st = stage_from_onnx(ref.name, ref.onnx, xs, ref.noise, rng)
        stages.append(st)
        outs = [index[_flash_name(o)] for o in ref.outputs] if key != "ismuon" else []
        wiring.append((key, "".join(c if c.isalnum() else "_" for c in ref.name), cols, ref.noise, outs, st.n_out))
    glue = _pipeline_glue(name, len(pipe.features), noise.shape[1], bank_names, index, wiring, muon_fill,
                          [index[o] for o in pipe.outputs])
    return stages, glue, [w[1] for w in wiring]


def _pipeline_glue(name, n_x, n_noise, bank_names, index, wiring, fill, out_cols) -> str:
    sym = "".join(c if c.isalnum() else "_" for c in name)
    lines = [f'extern "C" float* {sym}(float* out, const float* in) {{',
             f"  float bank[{len(bank_names)}], buf[256], res[64];",
             f"  for (int i = 0; i < {n_x}; ++i) bank[i] = in[i];",
             f"  const float* z = in + {n_x};",
             "  int a = 1;"]
    for key, ssym, cols, nz, outs, _n_out in wiring:
        gather = "".join(f"  buf[{i}] = bank[{c}];\n" for i, c in enumerate(cols))
        noise = f"  for (int i = 0; i < {nz}; ++i) buf[{len(cols)} + i] = z[a + i];\n  a += {nz};\n" if nz else ""
        if key == "ismuon":
            draw = "0.5f * (1.0f + erff(z[0] * 0.70710678f))"  # Phi(noise_0)
            lines.append(gather + f"  {ssym}(res, buf);\n  bank[{index['isMuon']}] = ({draw} < res[1]) ? 1.0f : 0.0f;")
        elif key == "muon":
            filled = [index[f"{bank_names[o]}_filled"] for o in outs]
            body = "".join(f"    bank[{o}] = res[{j}]; bank[{f}] = res[{j}];\n"
                           for j, (o, f) in enumerate(zip(outs, filled, strict=True)))
            none = "".join(f"    bank[{o}] = NAN; bank[{f}] = {fill:.1f}f;\n"
                           for o, f in zip(outs, filled, strict=True))
            lines.append(f"  if (bank[{index['isMuon']}] > 0.5f) {{\n" + gather.replace("  buf", "    buf")
                         + noise.replace("  for", "    for").replace("  a +=", "    a +=")
                         + f"    {ssym}(res, buf);\n" + body + "  } else {\n" + none + f"    a += {nz};\n  }}")
        else:
            scatter = "".join(f"  bank[{o}] = res[{j}];\n" for j, o in enumerate(outs))
            lines.append(gather + noise + f"  {ssym}(res, buf);\n" + scatter.rstrip("\n"))
    lines += [f"  out[{j}] = bank[{c}];" for j, c in enumerate(out_cols)]
    lines += ["  return out;", "}"]
    return "\n".join(lines) + "\n"
