"""``flashsim bench sqlamarr``: particles/s of the whole chain inside SQLamarr (HepMC2 in, our shared objects in
Plugin / GenerativePlugin steps, ``models/sqlamarr_pipeline.json``) against the batched onnxruntime chain of
``flashsim simulate`` on the same particles, both on one core, in one run.

SQLamarr: the pipeline's wall time in its process (``pipeline_s``: PVFinder, MCParticleSelector and every step;
HepMC2 loading apart, ``load_s``). onnxruntime: ``run_chain`` over the particles read from the same file (one
intra-op thread, ``runtime.cpu_batch_size``), best of three. Models: ``runtime.models`` when its shared objects
and pipeline are built; ``--quick`` (or none built) uses the toy acceptance + resolution models, compiled here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

HELP = "the chain inside SQLamarr with our shared objects vs batched onnxruntime, particles/s on one core"
WORK = Path("results") / "bench" / "sqlamarr"
TOY = ("acceptance", "resolution")


def _events(n: int, per_event: int, seed: int) -> dict[str, np.ndarray]:
    from flashsim.runtime.io import gun_config, particle_gun

    cols = next(particle_gun(gun_config({"n": n}), seed, chunk=n))
    cols["evtNumber"] = (np.arange(n) // per_event).astype(np.int64)
    return cols


def _models(params: dict, quick: bool, work: Path) -> tuple[Path, tuple[str, ...]]:
    """The models folder and the stages to skip."""
    from flashsim.runtime import export_c, sqlamarr, toys
    from flashsim.runtime.chain import ChainSpec

    src = Path(params.get("runtime", {}).get("models", "models"))
    spec = ChainSpec(pid={s: f"pid_pipeline_{s}" for s in params.get("runtime", {}).get("species", [])})
    if not quick and (src / sqlamarr.CONFIG_NAME).exists():
        cfg = json.loads((src / sqlamarr.CONFIG_NAME).read_text())
        return src, tuple(n for n in spec.names() if n not in cfg["models"])
    models = work / "models"
    if not (models / sqlamarr.CONFIG_NAME).exists():
        toys.build(models, n=3000, steps=40, width=32, which=TOY)
        for name in TOY:
            export_c.build_checked(name, models, rows=200)
    skip = tuple(n for n in spec.names() if n not in TOY)
    sqlamarr.write_config(models, spec, skip=skip)
    return models, skip


def run(quick: bool, params: dict) -> dict:
    import torch

    from flashsim.bench import one_core
    from flashsim.runtime import hepmc, sqlamarr
    from flashsim.runtime.session import pick_device
    from flashsim.runtime.simulate import Settings, build_chain, run_chain

    work = WORK
    work.mkdir(parents=True, exist_ok=True)
    models, skip = _models(params, quick, work)
    n = 2_000 if quick else 50_000
    hep = hepmc.write(_events(n, 50, 1), work / "events.hepmc2", "HepMC2", event_info=False)
    settings = Settings.from_params(params)
    settings.models, settings.device, settings.threads, settings.tree_backend = str(models), "cpu", 1, "onnx"
    settings.skip = skip
    with one_core() as cpus:
        db = sqlamarr.execute(models / sqlamarr.CONFIG_NAME, hep, work / "run.db", seed=1)
        timing = json.loads(Path(f"{db}.timing.json").read_text())
        n_sql = len(sqlamarr.read_output(db)["mcID"])
        chunk = next(hepmc.read(hep))
        chain = build_chain(settings, pick_device("cpu"))
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _out in run_chain(chain, [chunk], seed=1, batch_size=settings.cpu_batch_size):
                pass
            best = min(best, time.perf_counter() - t0)
    n_ort = len(chunk["mcID"])
    return {"particles": n_ort, "cpus": cpus, "models": str(models), "stages": chain.stages, "skipped": list(skip),
            "torch_threads": torch.get_num_threads(),
            "sqlamarr": {"particles": n_sql, **timing, "particles_per_s": n_sql / timing["pipeline_s"]},
            "onnxruntime": {"seconds": best, "batch_size": settings.cpu_batch_size,
                            "particles_per_s": n_ort / best},
            "ratio_onnxruntime_over_sqlamarr": (n_ort / best) / (n_sql / timing["pipeline_s"])}


def summary(r: dict) -> str:
    return (f"{r['particles']} particles, chain {' -> '.join(r['stages'])} on one core: SQLamarr "
            f"{r['sqlamarr']['particles_per_s']:.3g}/s (pipeline {r['sqlamarr']['pipeline_s']:.2f} s), batched "
            f"onnxruntime {r['onnxruntime']['particles_per_s']:.3g}/s ({r['ratio_onnxruntime_over_sqlamarr']:.3g}x)")
