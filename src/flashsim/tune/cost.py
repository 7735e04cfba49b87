"""Inference cost of an exported model: FLOPs per particle counted from the ONNX graph, or measured latency."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np


def _shapes(graph) -> dict[str, tuple[int, ...]]:
    from onnx import numpy_helper

    return {init.name: tuple(numpy_helper.to_array(init).shape) for init in graph.initializer}


def _graph_flops(graph, outer: dict[str, tuple[int, ...]]) -> float:
    shapes = {**outer, **_shapes(graph)}
    total = 0.0
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            w = next((shapes[i] for i in node.input[1:2] if i in shapes), None)
            if w is not None and len(w) >= 2:
                total += 2.0 * math.prod(w[-2:])
        elif node.op_type.startswith("TreeEnsemble"):
            attrs = {a.name: a for a in node.attribute}
            trees = attrs.get("nodes_treeids") or attrs.get("tree_roots")
            ids = list(getattr(trees, "ints", []))
            n_trees = len(set(ids)) if attrs.get("nodes_treeids") else len(ids)
            n_nodes = len(ids) if attrs.get("nodes_treeids") else len(attrs["nodes_splits"].ints) \
                if "nodes_splits" in attrs else len(ids)
            total += n_trees * max(math.log2(max(n_nodes / max(n_trees, 1), 2)), 1.0)  # one comparison per level
        for attr in node.attribute:  # Loop/If/Scan bodies count once
            if attr.g is not None and attr.g.node:
                total += _graph_flops(attr.g, shapes)
    return total


def flops_per_particle(onnx_path: str | Path) -> float:
    """Multiply-adds (x2) of every MatMul/Gemm against a weight, plus one comparison per tree level of tree
    ensembles: the graph's arithmetic per input row (element-wise ops are not counted)."""
    import onnx

    return _graph_flops(onnx.load(str(onnx_path)).graph, {})


def latency_per_particle(onnx_path: str | Path, x: np.ndarray, noise_dim: int, repeats: int = 5) -> float:
    """Median onnxruntime wall time per row (seconds), one thread, batches of ``len(x)`` rows."""
    from flashsim.export import ort_session

    sess = ort_session(onnx_path, threads=1)
    feeds = {"x": np.ascontiguousarray(x, dtype=np.float32)}
    names = {i.name for i in sess.get_inputs()}
    if "noise" in names:
        feeds["noise"] = np.random.default_rng(0).standard_normal((len(x), noise_dim)).astype(np.float32)
    sess.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / max(len(x), 1)
