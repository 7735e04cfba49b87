"""Benchmark ``ecal``: events/s of the ECAL GNN and Transformer at several photon multiplicities.

Events with exactly k photons come from the reference ECAL simulation run at a higher occupancy (the k most
energetic photons of events with at least k). Each model runs on batches of events:

- CPU: ONNX Runtime on ONE core (pinned, one thread); figures with the model's preprocessing (GNN: building the
  radius edges; Transformer: padding) and for the graph alone;
- CUDA (when usable): ONNX Runtime with the CUDA provider and IO binding; photons on the GPU, the preprocessing
  (GNN radius edges via :func:`flashsim.models.ecal.core.radius_edges_t`, Transformer padding, noise) in torch on
  the GPU, so nothing crosses the bus.

The models are ``models/<name>.onnx`` when exported, else the configured (untrained) architectures.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from flashsim.bench import one_core, throughput

HELP = "ECAL GNN and Transformer inference events/s at several photon multiplicities (CPU one core, CUDA)"
MODELS = ("ecal_gnn", "ecal_transformer")
MULTIPLICITIES = (2, 5, 10, 20, 30)


def events_with(k: int, n_events: int, seed: int = 0):
    """``n_events`` reference events with exactly ``k`` photons (the k most energetic of busier events)."""
    from flashsim.detsim import ecal
    from flashsim.io import ecal as D

    cfg = ecal.EcalConfig(mean_pi0=max(0.75 * k, 1.0), pi0_dispersion=20.0, mean_prompt=0.1 * k)
    rng = np.random.default_rng([seed, k])
    photons, have = [], 0
    while have < n_events:
        ev = ecal.simulate(max(2 * n_events, 1000), rng, cfg)
        n = ev.n_photons
        start = np.cumsum(n) - n
        sel = np.flatnonzero(n >= k)[: n_events - have]
        rows = (start[sel][:, None] + np.arange(k)[None, :]).ravel()
        p = ev.photons
        photons.append(np.column_stack([p[c][rows] for c in D.PHOTON_FEATURES]))
        have += len(sel)
    return D.Events(np.full(n_events, k), np.concatenate(photons), np.zeros(n_events, int), np.empty((0, 3)))


def _family(name: str, params: dict, tmp: Path):
    from flashsim.models import get_family, get_spec
    from flashsim.models.ecal import core as C

    fam = get_family(get_spec(name, params))
    if fam.spec.onnx_path.exists() and fam.model_path.exists():
        fam.load()
        return fam, fam.spec.onnx_path, True
    fam.module = fam.build(C.PhotonFeatures(), C.SlotOutput())
    path = tmp / f"{name}.onnx"
    fam.to_onnx(path)
    return fam, path, False


def _feeds(name: str, ev, noise_dim: int) -> tuple[dict, object]:
    """ONNX inputs of a batch of events and the preprocessing step (for timing it)."""
    from flashsim.io import ecal as D
    from flashsim.models.ecal import core as C

    noise = np.random.default_rng(1).standard_normal((len(ev.photons), noise_dim)).astype(np.float32)
    if name == "ecal_gnn":
        def prep():
            return {"x": ev.photons.astype(np.float32), "noise": noise, "edge_index": D.radius_edges(ev)}
    else:
        def prep():
            x, mask = C.pad_events(ev)
            return {"x": x, "mask": mask, "noise": noise.reshape(*mask.shape, noise_dim)}
    return prep(), prep


def run(quick: bool, params: dict) -> dict:
    import onnxruntime as ort

    from flashsim.export import ort_session
    from flashsim.runtime.session import cuda_available

    min_s = 0.3 if quick else 2.0
    mults = (5, 20) if quick else MULTIPLICITIES
    cpu_events = 200 if quick else 1000
    gpu_events = 2000 if quick else 20000
    use_cuda = cuda_available()
    results, info = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            fam, path, trained = _family(name, params, Path(tmp))
            info[name] = {"onnx": str(path) if trained else "untrained (configured architecture)", "trained": trained}
            with one_core() as cpus:
                sess = ort_session(path, threads=1)
                for k in mults:
                    ev = events_with(k, cpu_events)
                    feeds, prep = _feeds(name, ev, fam.noise_dim)
                    full = throughput(lambda prep=prep, sess=sess: sess.run(["y"], prep()), len(ev), min_s)
                    model = throughput(lambda feeds=feeds, sess=sess: sess.run(["y"], feeds), len(ev), min_s)
                    results.append({"model": name, "device": "cpu", "threads": 1, "photons_per_event": k,
                                    "batch_events": len(ev), "events_per_s": full["items_per_s"],
                                    "events_per_s_model_only": model["items_per_s"],
                                    "events_per_s_cpu_time": full["items_per_s_cpu"],
                                    "photons_per_s": full["items_per_s"] * k, "pinned_cpus": cpus})
            if use_cuda:
                results += _cuda(name, fam, path, mults, gpu_events, min_s)
    return {"models": info, "cuda_device": _gpu_name() if use_cuda else None, "onnxruntime": ort.__version__,
            "results": results}


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def device_feeds(name: str, photons, counts, noise_dim: int, gen=None) -> tuple[dict, object]:
    """ONNX inputs built in torch where ``photons`` [N, 5] live (GNN edges, Transformer padding, noise), and an
    empty output tensor of the right shape."""
    import torch

    from flashsim.models.ecal import core as C

    dev = photons.device
    noise = torch.randn(len(photons), noise_dim, device=dev, generator=gen)
    if name == "ecal_gnn":
        return ({"x": photons, "noise": noise, "edge_index": C.radius_edges_t(photons, counts)},
                torch.empty(len(photons), 5, device=dev))
    length = max(int(counts.max()), 1) if len(counts) else 1
    mask = torch.arange(length, device=dev)[None, :] < counts[:, None]
    x = torch.zeros(len(counts), length, 5, device=dev)
    x[mask] = photons
    nz = torch.zeros(len(counts), length, noise_dim, device=dev)
    nz[mask] = noise
    return {"x": x, "mask": mask, "noise": nz}, torch.empty(len(counts), length, 5, device=dev)


def _cuda(name: str, fam, path: Path, mults, n_events: int, min_s: float) -> list[dict]:
    """CUDA provider, IO binding; the preprocessing (GNN edges, Transformer padding, noise) runs on the GPU in
    torch, as a GPU flash simulation would do it with photons already on the device."""
    import onnxruntime as ort
    import torch

    from flashsim.export import session_options
    from flashsim.runtime.session import bind_tensors

    stream = torch.cuda.current_stream().cuda_stream
    providers = [("CUDAExecutionProvider", {"device_id": 0, "user_compute_stream": str(stream)})]
    sess = ort.InferenceSession(str(path), session_options(1), providers=providers)
    if "CUDAExecutionProvider" not in sess.get_providers():
        return []
    dev = torch.device("cuda")
    out = []
    for k in mults:
        ev = events_with(k, n_events)
        photons = torch.as_tensor(ev.photons, dtype=torch.float32, device=dev)
        counts = torch.as_tensor(ev.n_photons, device=dev)
        gen = torch.Generator(device=dev).manual_seed(1)

        def prep(photons=photons, counts=counts, gen=gen):
            return device_feeds(name, photons, counts, fam.noise_dim, gen)

        feeds, y = prep()
        binding = bind_tensors(sess, feeds, {"y": y}, "cuda")
        model = throughput(lambda binding=binding: sess.run_with_iobinding(binding), len(ev), min_s,
                           torch.cuda.synchronize)

        def with_prep(prep=prep):
            f, yy = prep()
            sess.run_with_iobinding(bind_tensors(sess, f, {"y": yy}, "cuda"))

        full = throughput(with_prep, len(ev), min_s, torch.cuda.synchronize)
        out.append({"model": name, "device": "cuda", "io": "binding", "photons_per_event": k,
                    "batch_events": len(ev), "events_per_s": full["items_per_s"],
                    "events_per_s_model_only": model["items_per_s"], "photons_per_s": full["items_per_s"] * k,
                    "preprocessing": "torch on the GPU"})
    return out


def summary(r: dict) -> str:
    rows = [f"{x['model']} {x['device']} k={x['photons_per_event']}: {x['events_per_s']:.3g} ev/s "
            f"(graph only {x['events_per_s_model_only']:.3g})" for x in r["results"]]
    return "ecal: " + "; ".join(rows)
