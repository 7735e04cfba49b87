"""Benchmark ``ghost_mlp``: ghost-probability MLP inference throughput (particles/s).

- ONNX Runtime on ONE CPU core (process pinned, one intra-op thread), batched, at several batch sizes;
- ONNX Runtime CUDA with IO binding (inputs and outputs stay on the GPU), batches of 1e6 and more, when a CUDA
  device and onnxruntime-gpu are usable;
- next to it, in the same run, torch throughput of the same layers (17 -> 25 -> 20 -> 1 + sigmoid) in bfloat16
  and float32 on the same device: the roofline reference of what the hardware does with this network.

The model is ``models/ghost_mlp.onnx`` when exported, else the configured (untrained) architecture: throughput
does not depend on the weights. Inputs are the prepared ghost test sample when present, else positive random
features. FLOPs per particle and bytes moved per particle are reported to place the figures on a roofline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from flashsim.bench import one_core, throughput

HELP = "ghost MLP inference particles/s: one CPU core (ORT batched), CUDA (IO binding), torch bf16 of the same layers"
CPU_BATCHES = (1_000, 10_000, 100_000, 1_000_000)
GPU_BATCHES = (1_000_000, 4_000_000)


def _family(params: dict):
    from flashsim.models import get_family, get_spec

    return get_family(get_spec("ghost_mlp", params))


def _model(params: dict, tmp: Path) -> tuple[Path, object, bool]:
    """(onnx path, GhostNet, trained?)"""
    fam = _family(params)
    path = fam.spec.onnx_path
    if path.exists() and fam.model_path.exists():
        fam.load()
        return path, fam.module, True
    fam.module = fam.build_net()
    out = tmp / "ghost_mlp.onnx"
    fam.to_onnx(out)
    return out, fam.module, False


def _inputs(params: dict, n: int) -> np.ndarray:
    fam = _family(params)
    x = None
    if fam.spec.prepared("test").exists():
        x = fam.features(fam.frame("test"))
    if x is None or len(x) == 0:
        x = np.random.default_rng(0).gamma(2.0, 2.0, (4096, len(fam.feature_names))).astype(np.float32)
    return np.ascontiguousarray(np.resize(x, (n, x.shape[1])), dtype=np.float32)


def _layers(net) -> torch.nn.Module:
    return torch.nn.Sequential(net.layers, torch.nn.Sigmoid())


def flops_per_particle(net) -> int:
    return int(sum(2 * m.in_features * m.out_features for m in net.layers if isinstance(m, torch.nn.Linear)))


def run(quick: bool, params: dict) -> dict:
    import onnxruntime as ort

    from flashsim.export import ort_session
    from flashsim.runtime.session import cuda_available

    min_s = 0.3 if quick else 2.0
    cpu_batches = CPU_BATCHES[:3] if quick else CPU_BATCHES
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path, net, trained = _model(params, Path(tmp))
        net = net.eval()
        n_in = net.layers[0].in_features
        x_all = _inputs(params, max(cpu_batches))
        with one_core() as cpus, torch.inference_mode():
            torch_threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                sess = ort_session(path, threads=1)
                for b in cpu_batches:
                    x = x_all[:b]
                    r = throughput(lambda x=x: sess.run(["y"], {"x": x}), b, min_s)
                    results.append({"engine": "onnxruntime", "device": "cpu", "threads": 1, "batch": b, **r})
                b = cpu_batches[-1]
                xt = torch.as_tensor(net.preprocess(torch.as_tensor(x_all[:b])).numpy())
                layers = _layers(net)
                for dtype in (torch.float32, torch.bfloat16):
                    lay, xx = layers.to(dtype), xt.to(dtype)
                    r = throughput(lambda lay=lay, xx=xx: lay(xx), b, min_s)
                    results.append({"engine": "torch", "dtype": str(dtype).split(".")[-1], "device": "cpu",
                                    "threads": 1, "batch": b, **r})
                layers.float()
            finally:
                torch.set_num_threads(torch_threads)
        gpu = None
        if cuda_available():
            gpu = torch.cuda.get_device_name(0)
            results += _cuda(path, net, x_all, quick, min_s)
    flops = flops_per_particle(net)
    for r in results:
        r["particles_per_s"] = r.pop("items_per_s")
        r["particles_per_s_cpu_time"] = r.pop("items_per_s_cpu")
        r["GFLOP_per_s"] = r["particles_per_s"] * flops / 1e9
    best = {}
    for r in results:
        key = f"{r['engine']}_{r.get('dtype', 'fp32')}_{r['device']}"
        best[key] = max(best.get(key, 0.0), r["particles_per_s"])
    return {"model": str(path) if trained else "untrained (configured architecture)", "trained": trained,
            "features": n_in, "flops_per_particle": flops, "bytes_per_particle_fp32_io": 4 * (n_in + 2),
            "pinned_cpus": cpus, "cuda_device": gpu, "onnxruntime": ort.__version__, "torch": torch.__version__,
            "results": results, "best_particles_per_s": best}


def _cuda(path: Path, net, x_all: np.ndarray, quick: bool, min_s: float) -> list[dict]:
    import onnxruntime as ort

    from flashsim.export import session_options

    out: list[dict] = []
    dev = torch.device("cuda")
    sess = ort.InferenceSession(str(path), session_options(1), providers=["CUDAExecutionProvider"])
    if "CUDAExecutionProvider" not in sess.get_providers():
        return out
    sync = torch.cuda.synchronize
    for b in GPU_BATCHES[:1] if quick else GPU_BATCHES:
        x = torch.as_tensor(np.resize(x_all, (b, x_all.shape[1]))).to(dev)
        y = torch.empty((b, 2), dtype=torch.float32, device=dev)
        binding = sess.io_binding()
        binding.bind_input("x", "cuda", 0, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output("y", "cuda", 0, np.float32, tuple(y.shape), y.data_ptr())
        r = throughput(lambda binding=binding: sess.run_with_iobinding(binding), b, min_s, sync)
        out.append({"engine": "onnxruntime", "device": "cuda", "io": "binding", "batch": b, **r})
        with torch.inference_mode():
            xt = net.to(dev).preprocess(x)
            layers = _layers(net).to(dev)
            for dtype in (torch.float32, torch.bfloat16):
                lay, xx = layers.to(dtype), xt.to(dtype)
                r = throughput(lambda lay=lay, xx=xx: lay(xx), b, min_s, sync)
                out.append({"engine": "torch", "dtype": str(dtype).split(".")[-1], "device": "cuda", "batch": b, **r})
            layers.float()
            net.cpu()
        del x, y
    return out


def summary(r: dict) -> str:
    parts = [f"{k}: {v:.3g}/s" for k, v in r["best_particles_per_s"].items()]
    return f"ghost_mlp ({'trained' if r['trained'] else 'untrained'}, {r['flops_per_particle']} FLOP/particle): " + \
        ", ".join(parts)
