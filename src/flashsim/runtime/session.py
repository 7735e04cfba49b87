"""ONNX Runtime sessions that read and write torch tensors in place (IO binding), on the CPU or a CUDA GPU.

Inputs and outputs are bound by device pointer, so chained models exchange tensors without copies: on a GPU
nothing leaves the device between models (ONNX Runtime runs on torch's current CUDA stream, so no extra
synchronisation is needed). ``io="host"`` is the naive alternative (numpy in, numpy out, copies each call)
kept for the benchmark.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flashsim.errors import ConfigError
from flashsim.export import session_options
from flashsim.runtime.trees import UnsupportedTrees, find_tree_node, tensor_form

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """Where a chain runs: ``torch`` device plus the matching ONNX Runtime provider."""

    kind: str  # "cpu" | "cuda"
    index: int = 0

    @property
    def torch(self) -> torch.device:
        return torch.device(self.kind, self.index) if self.kind == "cuda" else torch.device("cpu")

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else "cpu"


def cuda_available() -> bool:
    """A CUDA device for torch and the CUDA provider for ONNX Runtime."""
    import onnxruntime as ort

    return torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()


def pick_device(request: str = "auto") -> Device:
    """``auto``: CUDA when both torch and ONNX Runtime can use it, else the CPU."""
    if request == "cpu":
        return Device("cpu")
    if request.startswith("cuda"):
        if not cuda_available():
            raise ConfigError(f"device '{request}' requested but CUDA is not usable by torch and onnxruntime-gpu")
        return Device("cuda", int(request.split(":")[1]) if ":" in request else 0)
    return Device("cuda") if cuda_available() else Device("cpu")


def bind_tensors(session, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], device: str,
                 index: int | None = 0):
    """An ONNX Runtime IO binding of contiguous torch tensors by pointer (inputs, and preallocated outputs that
    the run fills in place) on ``device`` ("cpu" | "cuda"); the tensors must stay alive until the run."""
    dtypes = {torch.float32: np.float32, torch.int64: np.int64, torch.bool: np.bool_}
    binding = session.io_binding()
    for name, t in inputs.items():
        binding.bind_input(name, device, index, dtypes[t.dtype], tuple(t.shape), t.data_ptr())
    for name, t in outputs.items():
        binding.bind_output(name, device, index, dtypes[t.dtype], tuple(t.shape), t.data_ptr())
    return binding


class OrtModel:
    """One ONNX model: ``run(x, noise) -> y`` on torch tensors of ``device``."""

    def __init__(self, onnx_path: str | Path, device: Device, threads: int = 0, io: str = "binding",
                 spin: bool = False, tensor_trees: bool | None = None) -> None:
        """``tensor_trees``: run a tree ensemble in its tensor form (:func:`flashsim.runtime.trees.tensor_form`),
        which the CUDA provider executes on the device; default (None): on CUDA devices only. An ensemble with
        no tensor form (equality splits) keeps the TreeEnsemble kernel, with a warning."""
        import onnx
        import onnxruntime as ort

        if io not in ("binding", "host"):
            raise ConfigError(f"io must be 'binding' or 'host', not {io!r}")
        self.device, self.io, self.path = device, io, Path(onnx_path)
        if device.kind == "cuda":
            stream = torch.cuda.current_stream(device.torch).cuda_stream
            providers = [("CUDAExecutionProvider", {"device_id": device.index, "user_compute_stream": str(stream)}),
                         "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        source: str | bytes = str(onnx_path)
        if device.kind == "cuda" if tensor_trees is None else tensor_trees:
            model = onnx.load(str(onnx_path))
            if find_tree_node(model) is not None:
                try:  # float16 path products on the GPU (exact: small integers), float32 on the CPU
                    source = tensor_form(model, half=device.kind == "cuda").SerializeToString()
                except UnsupportedTrees as err:
                    log.warning("%s: no tensor form (%s); the TreeEnsemble kernel runs it", onnx_path, err)
        self.session = ort.InferenceSession(source, session_options(threads, spin), providers=providers)
        if device.kind == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise ConfigError(f"{onnx_path}: onnxruntime could not start the CUDA provider")
        self.inputs = {i.name: i.shape[-1] for i in self.session.get_inputs()}
        outs = {o.name: o.shape[-1] for o in self.session.get_outputs()}
        self.n_out = outs.get("y")
        if not isinstance(self.n_out, int):
            raise ConfigError(f"{onnx_path}: output y must have a fixed width")
        self._ort_dev = "cuda" if device.kind == "cuda" else "cpu"

    def run(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        if n == 0:
            return torch.empty((0, self.n_out), dtype=torch.float32, device=self.device.torch)
        feeds = {"x": x}
        if "noise" in self.inputs:
            if noise is None:
                raise ConfigError(f"{self.path}: generative model needs noise")
            feeds["noise"] = noise
        if self.io == "host":
            out = self.session.run(["y"], {k: v.detach().cpu().numpy() for k, v in feeds.items()})[0]
            return torch.from_numpy(out).to(self.device.torch)
        feeds = {name: t.contiguous() for name, t in feeds.items()}  # kept alive until the run
        y = torch.empty((n, self.n_out), dtype=torch.float32, device=self.device.torch)
        self.session.run_with_iobinding(bind_tensors(self.session, feeds, {"y": y}, self._ort_dev, self.device.index))
        return y


class CTreeModel:
    """A tree ensemble through its tl2cgen shared object (CPU only), rows split across ``threads`` threads."""

    def __init__(self, so: str | Path, symbol: str, threads: int = 0) -> None:
        from flashsim.runtime.cabi import CModel

        self.model = CModel(so, symbol)
        self.n_out = self.model.n_out
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self.inputs = {"x": self.model.n_in}
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def run(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        rows = x.detach().cpu().contiguous().numpy()
        if self._pool is None or len(rows) < 4096:
            return torch.from_numpy(self.model(rows))
        parts = np.array_split(rows, self.threads)
        return torch.from_numpy(np.concatenate(list(self._pool.map(self.model, parts))))
