"""Benchmark ``pid``: throughput of the chained per-species PID pipelines (``models/pid_pipeline_<species>.onnx``).

- ONNX Runtime on ONE CPU core (process pinned, one intra-op thread), batched, at several batch sizes;
- ONNX Runtime CUDA with IO binding (inputs, noise and outputs stay on the GPU) when a CUDA device and
  onnxruntime-gpu are usable.

Inputs are the species' calibration test sample (p, eta, nTracks, charge) when prepared, else a plausible
random spectrum; the noise is standard normal, drawn once per batch size outside the timed loop.
"""

from __future__ import annotations

import numpy as np

from flashsim.bench import one_core, throughput

HELP = "chained PID pipeline per species, particles/s: one CPU core (ORT batched) and CUDA (IO binding)"
CPU_BATCHES = (1_000, 10_000, 100_000)
GPU_BATCHES = (100_000, 1_000_000)


def _pipelines(params: dict) -> list[str]:
    from flashsim.models import expand_params

    return [n for n, e in expand_params(params).items() if e.get("family") == "pid_pipeline"]


def _inputs(fam, n: int) -> np.ndarray:
    x = None
    if fam.spec.prepared("test").exists():
        x = fam.features(fam.frame("test"))
    if x is None or len(x) == 0:
        rng = np.random.default_rng(0)
        x = np.stack([np.exp(rng.uniform(np.log(2e3), np.log(2e5), 4096)), rng.uniform(1.8, 5.0, 4096),
                      rng.integers(20, 400, 4096), rng.choice([-1.0, 1.0], 4096)], 1)
    return np.ascontiguousarray(np.resize(x, (n, x.shape[1])), dtype=np.float32)


def _species(params: dict, name: str, quick: bool, min_s: float) -> dict:
    import torch

    from flashsim.export import ort_session
    from flashsim.models import get_family, get_spec
    from flashsim.runtime.session import cuda_available, pick_device

    fam = get_family(get_spec(name, params))
    path = fam.spec.onnx_path
    if not path.exists():
        return {"model": name, "skipped": f"{path} not exported (run `flashsim export {name}`)"}
    sess = ort_session(path, threads=1)
    z = {i.name: i.shape[-1] for i in sess.get_inputs()}["noise"]
    cpu_batches = CPU_BATCHES[:2] if quick else CPU_BATCHES
    x_all = _inputs(fam, max(GPU_BATCHES[-1], cpu_batches[-1]))
    rng = np.random.default_rng(1)
    results = []
    with one_core() as cpus:
        for b in cpu_batches:
            x, noise = x_all[:b], rng.standard_normal((b, z)).astype(np.float32)
            r = throughput(lambda x=x, noise=noise: sess.run(["y"], {"x": x, "noise": noise}), b, min_s)
            results.append({"device": "cpu", "threads": 1, "batch": b, **r})
    gpu = None
    if cuda_available():
        from flashsim.runtime.session import OrtModel

        dev = pick_device("cuda")
        model = OrtModel(path, dev, threads=1, io="binding")
        gpu = torch.cuda.get_device_name(0)
        for b in GPU_BATCHES[:1] if quick else GPU_BATCHES:
            x = torch.as_tensor(x_all[:b]).to(dev.torch)
            noise = torch.randn((b, z), device=dev.torch)
            r = throughput(lambda x=x, noise=noise: model.run(x, noise), b, min_s, torch.cuda.synchronize)
            results.append({"device": "cuda", "io": "binding", "batch": b, **r})
    for r in results:
        r["particles_per_s"] = r.pop("items_per_s")
        r["particles_per_s_cpu_time"] = r.pop("items_per_s_cpu")
    best = {d: max(r["particles_per_s"] for r in results if r["device"] == d) for d in {r["device"] for r in results}}
    return {"model": name, "onnx": str(path), "noise_dim": z, "pinned_cpus": cpus, "cuda_device": gpu,
            "results": results, "best_particles_per_s": best}


def run(quick: bool, params: dict) -> dict:
    import onnxruntime as ort

    min_s = 0.3 if quick else 2.0
    per = [_species(params, name, quick, min_s) for name in _pipelines(params)]
    return {"onnxruntime": ort.__version__, "pipelines": per}


def summary(r: dict) -> str:
    parts = []
    for p in r["pipelines"]:
        if "skipped" in p:
            parts.append(f"{p['model']}: skipped")
        else:
            parts.append(f"{p['model']}: " + ", ".join(f"{d} {v:.3g}/s" for d, v in sorted(
                p["best_particles_per_s"].items())))
    return "; ".join(parts) or "no pid_pipeline models in params.yaml"
