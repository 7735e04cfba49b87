"""Benchmark ``runtime``: the flash-simulation chain and its models, measured side by side in one run.

CPU (always):
- per model: particles/s through ONNX Runtime on one core and on all cores, batched and one particle per call;
  per particle through our C-ABI shared object and through the scikinC equivalent (same weights), one core;
- whole chain: batched on one core / all cores, one particle per call, and the per-particle C loop that Lamarr
  runs (scikinC, and our own C artifacts) replaying exactly the model calls of the batched chain, one core.
GPU (when torch and onnxruntime-gpu see CUDA): per-model CPU-vs-GPU profile over batch sizes, the chain with IO
binding vs host copies over batch sizes, and the torch bf16 throughput of the same dense layers (roofline
reference: every dense layer the graphs run per particle, unrolled ODE steps and chained PID stages included;
tree ensembles have no bf16 counterpart and are excluded from it). On the GPU the chain runs tree ensembles in
their tensor form (CUDA has no TreeEnsemble kernel); the stock kernel, which falls back to the host, is timed
beside it.

Uses the models of ``runtime.models`` (``models/``); where none exist yet, the toy models of
:mod:`flashsim.runtime.toys` (cached under ``results/bench/runtime/``), and says so in the JSON.
``FLASHSIM_BENCH_PARTICLES`` sets the sample size (full: 5e5, sized for the toy chain).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from flashsim.bench import one_core, throughput
from flashsim.errors import ConfigError

HELP = "runtime: per-model and chain particles/s (1 core / all cores, batch 1 / batched), vs per-particle C; GPU"
log = logging.getLogger(__name__)
# particles: the gun sample (batched paths); c_particles: how many of them the per-particle C loops time
# sweep: GPU batch sizes; cpu_sweep: CPU chain batch sizes (besides runtime.cpu_batch_size; the best is reported)
QUICK = {"particles": 5_000, "c_particles": 300, "batch1": 100, "min_time": 0.25, "sweep": (1_000, 10_000, 100_000),
         "cpu_sweep": (1_000,)}
FULL = {"particles": 500_000, "c_particles": 5_000, "batch1": 2_000, "min_time": 2.0,
        "sweep": (1_000, 10_000, 100_000, 1_000_000), "cpu_sweep": (1_000, 30_000)}
TARGET_CPU_VS_C = 10.0
TARGET_GPU_VS_BF16 = 0.30


# --- helpers -----------------------------------------------------------------------------------------------------
def timed(fn, min_time: float, sync=None) -> float:
    """Seconds per call of ``fn`` (one warm-up call, then repeated for at least ``min_time``; ``sync`` waits for
    the device once at the end, so queued GPU work overlaps the Python between calls as in a real run)."""
    r = throughput(fn, 1, min_time, sync, max_reps=1 << 40)
    return r["seconds"] / r["reps"]


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _models(settings, work: Path):
    from flashsim.runtime import toys
    from flashsim.runtime.chain import ChainSpec
    from flashsim.runtime.models import available

    spec = ChainSpec(pid={s: f"pid_pipeline_{s}" for s in settings.species}, pid_types=settings.pid_types)
    refs = available(spec.names(), settings.models)
    if refs:
        return refs, spec, str(settings.models)
    toy_dir = work / "toy_models"
    if not (toy_dir / "pid_pipeline_p.json").exists():
        log.info("no chain model in %s: training the toy chain into %s", settings.models, toy_dir)
        toys.build(toy_dir)
    return available(spec.names(), toy_dir), spec, f"toy ({toy_dir})"


def _gun(n: int, seed: int) -> dict[str, np.ndarray]:
    from flashsim.runtime.io import GUN_DEFAULTS, gun_config, particle_gun

    cfg = gun_config({"n": n, "species": GUN_DEFAULTS["species"]})
    return next(particle_gun(cfg, seed, chunk=n))


def _batch(cols: dict[str, np.ndarray], device) -> object:
    from flashsim.runtime import features as F
    from flashsim.runtime.simulate import to_device

    return F.Batch(to_device(cols, device))


def _chain_rate(chain, cols, batch_size: int, min_time: float, seed: int = 1, sync=None) -> float:
    """Particles/s of the chain over ``cols`` (resident on the chain's device) in batches of ``batch_size``."""
    from flashsim.runtime import features as F

    n = len(cols["mcID"])
    dev_cols = _batch(cols, chain.device).columns
    gen = torch.Generator(device=chain.device.torch).manual_seed(seed)

    def once():
        for s in range(0, n, batch_size):
            chain.run(F.Batch({k: v[s:s + batch_size] for k, v in dev_cols.items()}), gen)

    return n / timed(once, min_time, sync)


def _model_rate(m, x: torch.Tensor, z: torch.Tensor | None, batch_size: int, min_time: float) -> float:
    """Rows/s of one chained model over ``x`` (and noise ``z``) in batches of ``batch_size``."""

    def once():
        for s in range(0, len(x), batch_size):
            m.run(x[s:s + batch_size], None if z is None else z[s:s + batch_size])

    return len(x) / timed(once, min_time)


def _best_chain_rate(chain, cols, sizes: tuple[int, ...], min_time: float) -> tuple[float, dict[int, float]]:
    """The chain's particles/s at each batch size (no larger than the sample) and the best of them."""
    n = len(cols["mcID"])
    sweep = {b: _chain_rate(chain, cols, b, min_time) for b in sorted({min(b, n) for b in sizes})}
    return max(sweep.values()), sweep


def _trace(chain, cols, batch_size: int = 100_000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model: the exact input rows ([x, noise]) and particle indices of a batched chain run."""
    n = len(cols["mcID"])
    gen = torch.Generator(device=chain.device.torch).manual_seed(1)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for start in range(0, n, batch_size):
        chain.trace = []
        b = _batch({k: v[start:start + batch_size] for k, v in cols.items()}, chain.device)
        chain.run(b, gen)
        for name, rows, x, noise in chain.trace:
            rows = np.arange(b.n) if rows is None else rows.cpu().numpy()
            data = x if noise is None else torch.cat([x, noise], 1)
            parts.setdefault(name, []).append((data.cpu().numpy().astype(np.float32), rows.astype(np.int64) + start))
    chain.trace = None
    return {name: (np.ascontiguousarray(np.concatenate([d for d, _ in ps])), np.concatenate([r for _, r in ps]))
            for name, ps in parts.items()}


# --- per-particle C --------------------------------------------------------------------------------------------
def _tools(work: Path) -> dict[str, Path]:
    from flashsim.runtime.cabi import build_checker, checker_source

    driver = work / "chain_driver"
    src = Path(__file__).with_name("chain_driver.c")
    if not driver.exists() or driver.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(driver), str(src), "-ldl"], check=True)
    checker = work / "cabi_check"
    if not checker.exists() or checker.stat().st_mtime < checker_source().stat().st_mtime:
        build_checker(checker)
    return {"driver": driver, "checker": checker}


def _per_particle(tools, libs: dict[str, tuple[str, str]], traced, n_out: dict[str, int], n_particles: int,
                  work: Path, tag: str, min_time: float = 0.2) -> dict:
    """Run the C loop of the chain (and each model alone) over the traced rows of the first ``n_particles``
    particles: particles/s on this core (the per-particle cost does not depend on how many are timed)."""
    plan = [str(n_particles)]
    per_model = {}
    for name, (data, rows) in traced.items():
        if name not in libs:
            continue
        keep = rows < n_particles
        data, rows = np.ascontiguousarray(data[keep]), np.ascontiguousarray(rows[keep])
        so, sym = libs[name]
        f_in, f_idx, f_out = (work / f"{tag}_{name}.{ext}" for ext in ("f32", "i64", "out"))
        data.tofile(f_in)
        rows.tofile(f_idx)
        plan.append(f"{so} {sym} {data.shape[1]} {n_out[name]} {f_in} {f_idx}")
        if len(data):
            cmd = [str(tools["checker"]), so, sym, str(f_in), str(f_out), str(data.shape[1]), str(n_out[name])]
            per_model[name] = 1e9 / _repeated(cmd, min_time)["ns_per_call"]
    (work / f"{tag}_plan.txt").write_text("\n".join(plan) + "\n")
    res = _repeated([str(tools["driver"]), str(work / f"{tag}_plan.txt")], min_time)
    return {"chain": res["particles_per_s"], "models": per_model, "particles": n_particles,
            "chain_models": sorted(n for n in traced if n in libs)}


def _repeated(cmd: list[str], min_time: float) -> dict:
    """Run a C timing program once; when that took less than ``min_time``, again with enough repetitions."""
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    if out["seconds"] < min_time:
        reps = int(np.ceil(min_time / max(out["seconds"], 1e-6)))
        out = json.loads(subprocess.run([*cmd, str(reps)], capture_output=True, text=True, check=True).stdout)
    return out


def _our_c_libs(refs, work: Path) -> tuple[dict[str, tuple[str, str]], dict]:
    """Our C-ABI shared objects: ``models/NAME.so`` where the workflow built it, else built here (cached)."""
    from flashsim.runtime import cabi

    def one(item) -> tuple[str, tuple[str, str], str]:
        name, ref = item
        sym = cabi.symbol_for(name)
        built = ref.onnx.with_suffix(".so")
        if built.exists() and built.stat().st_mtime >= ref.onnx.stat().st_mtime:
            meta = Path(f"{built}.json")
            route = json.loads(meta.read_text())["route"] if meta.exists() else "built"
            return name, (str(built.resolve()), sym), route
        so = work / "cabi" / f"{name}-{_digest([ref.onnx])}.so"
        route = "cached"
        if not so.exists():
            route = cabi.build(ref.onnx, so, name=name, workdir=work / "cabi" / f"{name}_c").route
        return name, (str(so.resolve()), sym), route

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # compiles run as subprocesses: threads suffice
        done = list(pool.map(one, refs.items()))
    return {n: lib for n, lib, _ in done}, {n: route for n, _, route in done}


def _stage_files(ref) -> list[Path]:
    """The ONNX files of a PID pipeline's stage models (they make its scikinC equivalent)."""
    stages = ((ref.card.get("params") or {}).get("model") or {}).get("stages") or {}
    return [p for p in (ref.onnx.parent / f"{s}.onnx" for s in stages.values()) if p.exists()]


BASELINE = Path("benchmarks") / "baselines" / "scikinc_baseline.py"


def scikinc_baseline():
    """LHCb's per-particle scikinC path, rebuilt from our weights: ``benchmarks/baselines/scikinc_baseline.py`` of
    the source checkout (not installed with the package; it needs the ``bench`` extra)."""
    import importlib.util
    import sys

    from flashsim.config import repo_root

    for root in (repo_root(), Path(__file__).resolve().parents[3]):
        path = root / BASELINE
        if path.is_file():
            break
    else:
        raise ConfigError(f"the scikinC baseline {BASELINE} is part of the source checkout; run from it")
    if "scikinc_baseline" in sys.modules:
        return sys.modules["scikinc_baseline"]
    spec = importlib.util.spec_from_file_location("scikinc_baseline", path)
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules["scikinc_baseline"] = module
        spec.loader.exec_module(module)
    except ImportError as err:  # pragma: no cover
        sys.modules.pop("scikinc_baseline", None)
        raise ConfigError(f"the scikinC baseline needs the bench extra (pip install -e '.[bench]'): {err}") from err
    return module


def _scikinc_libs(refs, traced, work: Path) -> tuple[dict[str, tuple[str, str]], dict]:
    """The scikinC equivalents of the traced models in one shared object (cached by the models' bytes and the
    converter's source)."""
    scikinc = scikinc_baseline()
    key = _digest([refs[n].onnx for n in traced] + [p for n in traced for p in _stage_files(refs[n])]
                  + [Path(scikinc.__file__)])
    so = work / "scikinc" / f"chain-{key}.so"
    meta_path = so.with_suffix(".json")
    if so.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return {n: (str(so.resolve()), s) for n, s in meta["symbols"].items()}, meta["info"]
    rng = np.random.default_rng(0)
    stages, info, composites = [], {}, {}
    for name, (data, _) in traced.items():
        ref = refs[name]
        x = data[: min(len(data), 50_000), : ref.n_in]
        try:
            if (ref.card.get("params") or {}).get("model", {}).get("stages"):  # a chained PID pipeline
                parts, glue, calls = scikinc.pipeline_stages(name, ref.card, ref.onnx.parent, x,
                                                             data[: len(x), ref.n_in:], rng)
                stages += parts
                composites[name] = (calls, glue)
                info[name] = {"kind": "pid pipeline", "stages": [
                    {"model": st.name, "equivalence": st.equivalence, "network_calls_per_particle": st.repeats}
                    for st in parts]}
                continue
            st = scikinc.stage_from_onnx(name, ref.onnx, x, ref.noise, rng)
        except scikinc.NoEquivalent as err:
            info[name] = f"no scikinC equivalent: {err}"
            continue
        stages.append(st)
        info[name] = {"kind": st.kind, "max_dev_vs_onnx": st.parity, "equivalence": st.equivalence,
                      "network_calls_per_particle": st.repeats, "objects": sorted(st.objects)}
    symbols = scikinc.build_library(stages, so, work / "scikinc" / f"src-{key}", composites=composites)
    symbols = {n: s for n, s in symbols.items() if n in traced}
    meta_path.write_text(json.dumps({"symbols": symbols, "info": info}))
    return {n: (str(so.resolve()), s) for n, s in symbols.items()}, info


# --- the benchmark -----------------------------------------------------------------------------------------------
def run(quick: bool, params: dict) -> dict:
    from flashsim.config import repo_root
    from flashsim.runtime.chain import Chain
    from flashsim.runtime.session import Device, cuda_available
    from flashsim.runtime.simulate import Settings

    cfg = dict(QUICK if quick else FULL)
    if os.environ.get("FLASHSIM_BENCH_PARTICLES"):  # trained models are slower than the toy chain: fewer suffice
        cfg["particles"] = int(os.environ["FLASHSIM_BENCH_PARTICLES"])
    work = repo_root() / "results" / "bench" / "runtime"
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_params(params)
    refs, spec, source = _models(settings, work)
    cols = _gun(cfg["particles"], int(params["seed"]))
    n = len(cols["mcID"])
    cpu = Device("cpu")
    tools = _tools(work)
    res: dict = {"models_source": source, "particles": n, "chain_stages": [], "cpu": {}, "targets": {}}

    # one core: per model (batched, batch 1), chain, per-particle C paths
    with one_core() as core:
        chain1 = Chain(refs, cpu, spec=spec, threads=1)
        res["chain_stages"] = chain1.stages
        traced = _trace(chain1, cols, settings.cpu_batch_size)
        n_out = {name: chain1.models[name].n_out for name in traced}
        per_model = {}
        for name, (data, _) in traced.items():
            ref, m = refs[name], chain1.models[name]
            x = torch.from_numpy(data[:, : ref.n_in])
            z = torch.from_numpy(data[:, ref.n_in:]) if ref.noise else None
            k = min(cfg["batch1"], len(data))
            batched = _model_rate(m, x, z, settings.cpu_batch_size, cfg["min_time"])
            one = k / timed(lambda m=m, x=x, z=z, k=k: [m.run(x[i:i + 1], None if z is None else z[i:i + 1])
                                                        for i in range(k)], cfg["min_time"])
            per_model[name] = {"rows": len(data), "features": ref.n_in, "noise": ref.noise,
                               "onnx_1core_batched": batched, "onnx_1core_batch1": one}
        cpu_sizes = (*cfg["cpu_sweep"], settings.cpu_batch_size)
        chain_1core, sweep_1core = _best_chain_rate(chain1, cols, cpu_sizes, cfg["min_time"])
        k = cfg["batch1"]
        small = {c: v[:k] for c, v in cols.items()}
        chain_batch1 = _chain_rate(chain1, small, 1, cfg["min_time"])
        our_libs, our_info = _our_c_libs(refs, work)
        ours = _per_particle(tools, our_libs, traced, n_out, cfg["c_particles"], work, "ours", cfg["min_time"])
        try:
            skc_libs, skc_info = _scikinc_libs(refs, traced, work)
            skc = _per_particle(tools, skc_libs, traced, n_out, cfg["c_particles"], work, "scikinc",
                                cfg["min_time"])
        except (ConfigError, ImportError) as err:  # scikinC/keras are the optional `bench` extra
            skc, skc_info = None, {"error": str(err)}
    # all cores
    chain_all = Chain(refs, cpu, spec=spec, threads=0)
    for name, (data, _) in traced.items():
        ref, m = refs[name], chain_all.models[name]
        x = torch.from_numpy(data[:, : ref.n_in])
        z = torch.from_numpy(data[:, ref.n_in:]) if ref.noise else None
        per_model[name]["onnx_allcores_batched"] = _model_rate(m, x, z, settings.cpu_batch_size, cfg["min_time"])
        per_model[name]["c_ours_1core"] = ours["models"].get(name)
        per_model[name]["scikinc_1core"] = (skc or {"models": {}})["models"].get(name)
    chain_allcores, sweep_allcores = _best_chain_rate(chain_all, cols, cpu_sizes, cfg["min_time"])

    res["cpu"] = {
        "core": core, "cores": os.cpu_count(), "batch_size": settings.cpu_batch_size, "per_model": per_model,
        "chain_batch_sweep": {"1core": sweep_1core, "allcores": sweep_allcores},
        "chain": {"onnx_1core_batched": chain_1core, "onnx_allcores_batched": chain_allcores,
                  "onnx_1core_batch1": chain_batch1, "c_ours_1core_per_particle": ours["chain"],
                  "scikinc_1core_per_particle": skc["chain"] if skc else None},
        "c_ours": our_info, "scikinc": skc_info,
    }
    if skc:
        ratio = chain_1core / skc["chain"]
        res["targets"]["cpu_chain_vs_scikinc_1core"] = {"value": ratio, "target": TARGET_CPU_VS_C,
                                                        "pass": ratio >= TARGET_CPU_VS_C}
    res["cpu"]["ratios"] = {
        "chain_batched_vs_batch1_1core": chain_1core / chain_batch1,
        "chain_allcores_vs_1core": chain_allcores / chain_1core,
        "chain_batched_vs_c_ours_1core": chain_1core / ours["chain"],
        **({"chain_batched_vs_scikinc_1core": chain_1core / skc["chain"]} if skc else {}),
    }
    res["cpu"]["mflop_per_particle"] = mflop_per_particle(refs, traced, n)
    res["few_step"] = few_step_comparison(params, refs, spec, cols, settings, cfg, tools, work, res["cpu"],
                                          toy=source.startswith("toy"))
    res["targets"].update(res["few_step"].get("targets", {}))
    res["gpu"] = device_profile(refs, spec, cols, traced, per_model, cfg, Device("cuda")) if cuda_available() else None
    if res["gpu"]:
        res["targets"]["gpu_chain_vs_bf16"] = res["gpu"]["vs_bf16"]
    write_markdown(res, repo_root() / "reports" / "bench" / "runtime.md")
    return res


# --- few-step vs 8-step vs Lamarr's one-pass GANs ------------------------------------------------------------------
TARGET_FEW_VS_FLOW8 = 3.0
TARGET_FEW_VS_SCIKINC_GAN = 10.0


def mflop_per_particle(refs, traced, n_particles: int) -> dict:
    """MFLOP per generated particle, per model and in all: 2 x in x out of every dense layer the ONNX graph runs per
    row (:func:`dense_shapes`: unrolled ODE steps and chained stages included) x the model's rows per particle."""
    import onnx

    out = {}
    for name, (_, rows) in traced.items():
        per_row = sum(2 * a * b * k for (a, b), k in dense_shapes(onnx.load(str(refs[name].onnx))).items()) / 1e6
        out[name] = {"mflop_per_row": per_row, "rows_per_particle": len(rows) / n_particles,
                     "mflop_per_particle": per_row * len(rows) / n_particles}
    out["chain"] = sum(v["mflop_per_particle"] for v in out.values())
    return out


def few_step_comparison(params, refs, spec, cols, settings, cfg, tools, work: Path, deployed: dict,
                        toy: bool) -> dict:
    """The deployed chain (few-step generators where params.yaml says ``steps``) against the same chain with the
    8-step flow teachers and with one-pass GANs of the same widths (:mod:`flashsim.bench.variants`): MFLOP per
    particle and particles/s batched on one core and all cores; the GAN chain also per particle through scikinC
    (Lamarr's deployed configuration). Ratios few-step / 8-step and few-step / scikinC GAN, per core."""
    from flashsim.bench.variants import VARIANTS, write_variant
    from flashsim.runtime.chain import Chain
    from flashsim.runtime.models import available
    from flashsim.runtime.session import Device

    if toy:
        return {"skipped": "toy models (no trained generators to derive the variants from)"}
    out: dict = {"deployed": {"mflop_per_particle": deployed["mflop_per_particle"]["chain"],
                              "onnx_1core_batched": deployed["chain"]["onnx_1core_batched"],
                              "onnx_allcores_batched": deployed["chain"]["onnx_allcores_batched"]},
                 "gan1_untrained": True, "targets": {}}
    cpu, sizes = Device("cpu"), (*cfg["cpu_sweep"], settings.cpu_batch_size)
    for variant in VARIANTS:
        d = work / "variants" / variant
        written = write_variant(variant, params, Path(settings.models), spec.names(), d)
        vrefs = available(spec.names(), d)
        with one_core():
            chain1 = Chain(vrefs, cpu, spec=spec, threads=1)
            traced = _trace(chain1, cols, settings.cpu_batch_size)
            rate1, _ = _best_chain_rate(chain1, cols, sizes, cfg["min_time"])
            row = {"models": written, "mflop_per_particle": mflop_per_particle(vrefs, traced, len(cols["mcID"])),
                   "onnx_1core_batched": rate1}
            if variant == "gan1":
                try:
                    n_out = {name: chain1.models[name].n_out for name in traced}
                    libs, info = _scikinc_libs(vrefs, traced, work / "variants")
                    skc = _per_particle(tools, libs, traced, n_out, cfg["c_particles"], work / "variants",
                                        "scikinc_gan", cfg["min_time"])
                    row |= {"scikinc_1core_per_particle": skc["chain"], "scikinc_models": skc["models"],
                            "scikinc": info}
                except (ConfigError, ImportError) as err:  # scikinC/keras are the optional `bench` extra
                    row["scikinc_error"] = str(err)
        row["onnx_allcores_batched"], _ = _best_chain_rate(Chain(vrefs, cpu, spec=spec, threads=0), cols, sizes,
                                                           cfg["min_time"])
        out[variant] = row
    few, f8, gan = out["deployed"], out["flow8"], out["gan1"]
    ratio = few["onnx_1core_batched"] / f8["onnx_1core_batched"]
    out["ratios"] = {"few_step_vs_flow8_1core": ratio,
                     "few_step_vs_flow8_allcores": few["onnx_allcores_batched"] / f8["onnx_allcores_batched"],
                     "mflop_flow8_vs_few_step": f8["mflop_per_particle"]["chain"] / few["mflop_per_particle"],
                     "few_step_vs_gan1_onnx_1core": few["onnx_1core_batched"] / gan["onnx_1core_batched"]}
    out["targets"]["few_step_vs_flow8_1core"] = {"value": ratio, "target": TARGET_FEW_VS_FLOW8,
                                                 "pass": ratio >= TARGET_FEW_VS_FLOW8}
    if gan.get("scikinc_1core_per_particle"):
        r = few["onnx_1core_batched"] / gan["scikinc_1core_per_particle"]
        out["ratios"]["few_step_vs_scikinc_gan1_1core"] = r
        out["targets"]["few_step_vs_scikinc_gan1_1core"] = {"value": r, "target": TARGET_FEW_VS_SCIKINC_GAN,
                                                            "pass": r >= TARGET_FEW_VS_SCIKINC_GAN}
    return out


# --- GPU ---------------------------------------------------------------------------------------------------------
def device_profile(refs, spec, cols, traced, per_model_cpu, cfg, dev) -> dict:
    """The GPU half of the benchmark on device ``dev`` (a CUDA device; the CPU runs the same code in tests):
    the chain with IO binding vs host copies over batch sizes, each model over batch sizes against its best CPU
    rate, tree ensembles in tensor form beside the stock kernel, and the torch bf16 reference of the same dense
    layers. ``traced``: each model's input rows from :func:`_trace`; ``per_model_cpu``: the CPU rates."""
    import onnx

    from flashsim.runtime.chain import Chain
    from flashsim.runtime.session import OrtModel
    from flashsim.runtime.trees import find_tree_node

    cuda = dev.kind == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    out: dict = {"device": torch.cuda.get_device_name(dev.index) if cuda else "cpu", "per_model": {}, "chain": {}}
    big = {k: np.resize(v, cfg["sweep"][-1]) for k, v in cols.items()}  # resident particles for the sweeps
    chain = Chain(refs, dev, spec=spec, io="binding", tensor_trees=True)
    chain_host = Chain(refs, dev, spec=spec, io="host", tensor_trees=True)
    for bs in cfg["sweep"]:
        part = {k: v[:bs] for k, v in big.items()}
        out["chain"][str(bs)] = {"io_binding": _chain_rate(chain, part, bs, cfg["min_time"], sync=sync),
                                 "host_io": _chain_rate(chain_host, part, bs, cfg["min_time"], sync=sync)}
    # per model: CPU (measured above) vs GPU over batch sizes
    bf16_time = 0.0
    for name, (data, _) in traced.items():
        ref, m = refs[name], chain.models[name]
        rows = {}
        for bs in cfg["sweep"]:
            x = torch.from_numpy(np.resize(data[:, : ref.n_in], (bs, ref.n_in))).to(dev.torch)
            z = torch.randn((bs, ref.noise), device=dev.torch) if ref.noise else None
            rows[str(bs)] = bs / timed(lambda m=m, x=x, z=z: m.run(x, z), cfg["min_time"], sync)
        cpu_best = max(per_model_cpu[name]["onnx_allcores_batched"], per_model_cpu[name]["onnx_1core_batched"])
        providers = m.session.get_providers() if hasattr(m, "session") else ["C"]
        entry = {"gpu_by_batch": rows, "cpu_allcores_batched": cpu_best,
                 "winner_at_largest_batch": "gpu" if rows[str(cfg["sweep"][-1])] > cpu_best else "cpu",
                 "providers": providers}
        graph = onnx.load(str(ref.onnx))
        if find_tree_node(graph) is not None:  # the chain runs the tensor form; the stock kernel falls back to the host
            stock = OrtModel(ref.onnx, dev, tensor_trees=False)
            entry["tree_ensemble_kernel_by_batch"] = {}
            for bs in cfg["sweep"]:
                x = torch.from_numpy(np.resize(data[:, : ref.n_in], (bs, ref.n_in))).to(dev.torch)
                entry["tree_ensemble_kernel_by_batch"][str(bs)] = bs / timed(
                    lambda stock=stock, x=x: stock.run(x), cfg["min_time"], sync)
        shapes = dense_shapes(graph)
        if shapes:  # the same dense layers in torch bf16 (roofline reference)
            per_row = _bf16_seconds_per_row(shapes, cfg["sweep"][-1], dev.torch, cfg["min_time"], sync)
            entry["bf16_rows_per_s"] = 1.0 / per_row
            entry["dense_layers_per_particle"] = sum(shapes.values())
            bf16_time += per_row * len(data)
        else:
            entry["bf16_rows_per_s"] = None
            entry["bf16_note"] = "no dense layers (tree ensemble): excluded from the bf16 reference"
        out["per_model"][name] = entry
    n = len(cols["mcID"])
    best_chain = max(v["io_binding"] for v in out["chain"].values())
    bf16_rate = n / bf16_time if bf16_time > 0 else None
    out["bf16_chain_equivalent"] = bf16_rate
    ratio = best_chain / bf16_rate if bf16_rate else None
    out["vs_bf16"] = {"value": ratio, "target": TARGET_GPU_VS_BF16,
                      "pass": bool(ratio is not None and ratio >= TARGET_GPU_VS_BF16),
                      "chain_particles_per_s": best_chain, "bf16_particles_per_s": bf16_rate}
    return out


def dense_shapes(model) -> dict[tuple[int, int], int]:
    """(in, out) -> how many times a dense layer of that shape runs per particle in an ONNX graph (every Gemm /
    MatMul node with a constant 2-D weight: unrolled ODE steps and chained stages included)."""
    from onnx import numpy_helper

    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            dims[n.output[0]] = tuple(numpy_helper.to_array(n.attribute[0].t).shape)
    out: dict[tuple[int, int], int] = {}
    for n in model.graph.node:
        w = dims.get(n.input[1]) if len(n.input) > 1 else None
        if n.op_type not in ("Gemm", "MatMul") or w is None or len(w) != 2:
            continue
        trans = any(a.name == "transB" and a.i for a in n.attribute)
        shape = (w[1], w[0]) if trans else (w[0], w[1])
        out[shape] = out.get(shape, 0) + 1
    return out


def _bf16_seconds_per_row(shapes: dict[tuple[int, int], int], batch: int, device, min_time: float, sync) -> float:
    """Seconds per row of the given dense layers (Linear + SiLU) in torch bf16 at ``batch`` rows."""
    total = 0.0
    with torch.inference_mode():
        for (n_in, n_out), count in shapes.items():
            lin = torch.nn.Linear(n_in, n_out).to(device, torch.bfloat16)
            h = torch.randn((batch, n_in), device=device, dtype=torch.bfloat16)
            total += count * timed(lambda lin=lin, h=h: torch.nn.functional.silu(lin(h)), min_time, sync) / batch
    return total


def _torch_layers(layers) -> torch.nn.Module:
    mods = []
    for k, b, act, slope in layers.layers:
        lin = torch.nn.Linear(k.shape[0], k.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(k.T))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        mods += {"relu": [torch.nn.ReLU()], "tanh": [torch.nn.Tanh()], "sigmoid": [torch.nn.Sigmoid()],
                 "elu": [torch.nn.ELU()], "leaky_relu": [torch.nn.LeakyReLU(slope)],
                 "silu": [torch.nn.SiLU()]}.get(act, [])
    if layers.softmax:
        mods.append(torch.nn.Softmax(dim=1))
    return torch.nn.Sequential(*mods).eval()


# --- report ------------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def summary(res: dict) -> str:
    c = res["cpu"]
    lines = [f"runtime benchmark ({res['models_source']}, {res['particles']} particles)",
             "| model | rows | ORT 1 core batched | ORT all cores | ORT batch 1 | our C / particle "
             "| scikinC / particle |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in c["per_model"].items():
        lines.append(f"| {name} | {m['rows']} | {_fmt(m['onnx_1core_batched'])} | {_fmt(m['onnx_allcores_batched'])} "
                     f"| {_fmt(m['onnx_1core_batch1'])} | {_fmt(m['c_ours_1core'])} | {_fmt(m['scikinc_1core'])} |")
    ch = c["chain"]
    lines += ["", "| whole chain (particles/s) | value |", "| --- | ---: |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in ch.items()]
    lines += [f"| ratio {k} | {_fmt(v)} |" for k, v in c["ratios"].items()]
    for cores, sweep in c.get("chain_batch_sweep", {}).items():
        lines.append(f"| chain {cores} by batch size | "
                     + ", ".join(f"{b}: {_fmt(v)}" for b, v in sweep.items()) + " |")
    fs = res.get("few_step") or {}
    if "flow8" in fs:
        lines += ["", "| chain variant | MFLOP / particle | ORT 1 core | ORT all cores | scikinC / particle |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        d = fs["deployed"]
        lines.append(f"| deployed (few-step) | {_fmt(d['mflop_per_particle'])} | {_fmt(d['onnx_1core_batched'])} "
                     f"| {_fmt(d['onnx_allcores_batched'])} | {_fmt(c['chain']['scikinc_1core_per_particle'])} |")
        for v, label in (("flow8", "8-step flows"), ("gan1", "one-pass GANs (untrained, timing only)")):
            r = fs[v]
            lines.append(f"| {label} | {_fmt(r['mflop_per_particle']['chain'])} | {_fmt(r['onnx_1core_batched'])} "
                         f"| {_fmt(r['onnx_allcores_batched'])} | {_fmt(r.get('scikinc_1core_per_particle'))} |")
        lines += [f"| ratio {k} | {_fmt(v)} |" for k, v in fs["ratios"].items()]
    for k, t in res["targets"].items():
        lines.append(f"| target {k} (>= {t['target']}) | {_fmt(t['value'])} {'PASS' if t['pass'] else 'FAIL'} |")
    if res.get("gpu"):
        lines += device_lines(res["gpu"])
    return "\n".join(lines)


def device_lines(g: dict) -> list[str]:
    """Markdown lines of :func:`device_profile`'s result."""
    lines = ["", f"GPU {g['device']}: chain particles/s by batch size",
             "| batch | IO binding | host IO |", "| ---: | ---: | ---: |"]
    lines += [f"| {bs} | {_fmt(v['io_binding'])} | {_fmt(v['host_io'])} |" for bs, v in g["chain"].items()]
    lines += ["", "| model | GPU @ largest batch | stock tree kernel | CPU best | winner | bf16 rows/s |",
              "| --- | ---: | ---: | ---: | --- | ---: |"]
    for name, m in g["per_model"].items():
        top = list(m["gpu_by_batch"].values())[-1]
        stock = list(m.get("tree_ensemble_kernel_by_batch", {None: None}).values())[-1]
        lines.append(f"| {name} | {_fmt(top)} | {_fmt(stock)} | {_fmt(m['cpu_allcores_batched'])} "
                     f"| {m['winner_at_largest_batch']} | {_fmt(m.get('bf16_rows_per_s'))} |")
    t = g["vs_bf16"]
    lines.append(f"\nchain {_fmt(t['chain_particles_per_s'])} particles/s vs bf16 reference "
                 f"{_fmt(t['bf16_particles_per_s'])}: ratio {_fmt(t['value'])} (target >= {t['target']}: "
                 f"{'PASS' if t['pass'] else 'FAIL'})")
    return lines


def write_markdown(res: dict, path: Path) -> None:
    from flashsim.io.atomic import write_text

    env = "all rates in particles (rows) per second; one core = this process pinned to one CPU"
    write_text(path, "# flashsim bench runtime\n\n" + summary(res) + f"\n\n_{env}_\n")
