"""A small training job for the MLflow concurrency test: logistic regression by gradient descent (numpy),
per-epoch metrics, an ONNX export registered in the MLflow model_registry. Prints a JSON summary of what it logged.

    python tests/mlflow_worker.py NAME SEED EPOCHS PROJECT_DIR [GO_FILE]

With GO_FILE the job waits (after its imports) until that file exists, so that jobs start together.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flashsim.mlops import model_registry, provenance, runs


def onnx_model(w: np.ndarray, b: float) -> bytes:
    """y = sigmoid(x @ w + b), input x float32 [N, F], output y float32 [N, 1]."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z0"]), helper.make_node("Add", ["z0", "b"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["y"])], "logreg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, len(w)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(w.astype("f4").reshape(-1, 1), "w"),
         numpy_helper.from_array(np.array([b], "f4"), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main(name: str, seed: int, epochs: int, root: Path, go: Path | None = None) -> None:
    while go is not None and not go.exists():
        time.sleep(0.05)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 4))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(size=2000) > 0).astype(float)
    w, b, losses = np.zeros(4), 0.0, []
    with runs.start_job("train", name, params={"seed": seed, "epochs": epochs, "lr": 0.5}, root=root) as t:
        for epoch in range(epochs):
            p = 1 / (1 + np.exp(-(x @ w + b)))
            loss = float(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12)))
            w -= 0.5 * x.T @ (p - y) / len(y)
            b -= 0.5 * float(np.mean(p - y))
            losses.append(loss)
            t.log_metrics({"loss": loss, "accuracy": float(np.mean((p > 0.5) == y))}, step=epoch)
        out = root / "models" / f"{name}.onnx"
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(onnx_model(w, b))
        onnx.checker.check_model(onnx.load(out))
        card = out.with_suffix(".json")
        card.write_text(json.dumps({"name": name, "seed": seed}))
        version = model_registry.register_export(t, name, out, card)
    print(json.dumps({"name": name, "run_id": t.run_id, "uri": t.uri, "fallback": t.fallback, "losses": losses,
                      "version": version, "onnx_sha256": provenance.file_sha256(out)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]),
         Path(sys.argv[5]) if len(sys.argv) > 5 else None)
