"""``flashsim simulate``: generator-level particles in, flash-simulated analysis-level ntuple out."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flashsim.detector import RECONSTRUCTED_TYPES
from flashsim.errors import ConfigError, InputError
from flashsim.runtime.io import EXTRAS, GENERATOR

if TYPE_CHECKING:  # torch and ONNX load in the functions, so that `flashsim --help` stays fast
    import torch

    from flashsim.runtime.chain import Chain, ChainSpec, Replay
    from flashsim.runtime.session import Device

HELP = "run the chain of ONNX models on generator-level particles and write an analysis-level ntuple"
log = logging.getLogger(__name__)
OUT_TREE = "FlashSim"


@dataclass
class Settings:
    """Runtime settings (``params.yaml`` section ``runtime``, overridable on the command line)."""

    models: str = "models"
    device: str = "auto"
    threads: int = 0
    spin: bool = False
    batch_size: int = 100_000  # on the GPU
    cpu_batch_size: int = 10_000
    io: str = "binding"
    tree_backend: str = "auto"
    species: tuple[str, ...] = ("mu", "pi", "K", "p")  # the trained PID pipelines (params.yaml)
    pid_types: tuple[int, ...] = RECONSTRUCTED_TYPES
    compression: str = "lz4"
    skip: tuple[str, ...] = ()  # stages run without: roles (acceptance, ..., pid, ecal) or model names
    ecal: str = "none"  # the ECAL model of photons (ecal_gnn | ecal_transformer | none)

    @classmethod
    def from_params(cls, params: dict) -> Settings:
        from flashsim.config import resolve_scale

        rt = resolve_scale(params.get("runtime", {}), params.get("scale", "demo"))
        known = {k: rt[k] for k in cls.__dataclass_fields__ if k in rt}
        for k in ("species", "pid_types", "skip"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)

    def chain_batch(self, device) -> int:
        """Particles per chained batch on ``device`` (a runtime Device)."""
        return self.cpu_batch_size if device.kind == "cpu" else self.batch_size


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index``'s torch generator (independent streams per batch)."""
    from flashsim.seeding import stream_key

    ss = np.random.SeedSequence([seed, stream_key("simulate"), index])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


STAGES = ("acceptance", "efficiency", "resolution", "covariance", "pid")


def stage_roles(spec: ChainSpec) -> dict[str, str]:
    """Model name -> its stage (``acceptance`` ... ``pid``)."""
    roles = {spec.acceptance: "acceptance", spec.efficiency: "efficiency", spec.resolution: "resolution",
             spec.covariance: "covariance"}
    return {**roles, **dict.fromkeys(spec.pid.values(), "pid")}


def build_chain(settings: Settings, device: Device | None = None) -> Chain:
    """Resolve the chain's models in ``settings.models`` and open their sessions.

    Strict: a model that does not resolve is a ConfigError unless its stage or name is in ``settings.skip``.
    """
    from flashsim.runtime.chain import Chain, ChainSpec
    from flashsim.runtime.ecal import ECAL_MODELS
    from flashsim.runtime.models import available
    from flashsim.runtime.session import pick_device

    spec = ChainSpec(pid={s: f"pid_pipeline_{s}" for s in settings.species}, pid_types=settings.pid_types)
    roles = stage_roles(spec)
    unknown = [k for k in settings.skip if k not in STAGES and k not in roles and k != "ecal"
               and k not in ECAL_MODELS]
    if unknown:
        raise ConfigError(f"--skip / runtime.skip: unknown stage {', '.join(unknown)} (stages: "
                          f"{', '.join(STAGES)}, ecal; or a model name: {', '.join(roles)})")
    skipped = {n for n, r in roles.items() if r in settings.skip or n in settings.skip}
    refs = available([n for n in spec.names() if n not in skipped], settings.models)
    missing = [n for n in spec.names() if n not in refs and n not in skipped]
    if missing:
        raise ConfigError(f"chain: no model {', '.join(missing)} in {settings.models} (train/export it, or run "
                          f"without it: --skip {' --skip '.join(sorted({roles[n] for n in missing}))})")
    if not refs:
        raise ConfigError(f"no chain model left in {settings.models}: every stage is skipped")
    device = device or pick_device(settings.device)
    tree_libs = None
    if settings.tree_backend in ("auto", "c") and device.kind == "cpu":
        tree_libs = _tree_libs(refs, required=settings.tree_backend == "c")
    return Chain(refs, device, spec=spec, threads=settings.threads, io=settings.io, tree_libs=tree_libs,
                 spin=settings.spin, tensor_trees=settings.tree_backend == "tensor" or (
                     settings.tree_backend != "onnx" and device.kind == "cuda"))


def _tree_libs(refs: dict, required: bool) -> dict[str, tuple[str, str]]:
    """Tree ensembles with an up-to-date C-ABI shared object next to their ONNX file (``flashsim cabi``): on the
    CPU their tl2cgen code beats ONNX Runtime's TreeEnsemble per core. ``required``: missing ones are an error."""
    import json

    from flashsim.runtime.cabi import symbol_for
    from flashsim.runtime.trees import is_tree_file

    out = {}
    for name, ref in refs.items():
        if not is_tree_file(ref.onnx):
            continue
        so = ref.onnx.with_suffix(".so")
        meta = Path(f"{so}.json")
        fresh = so.exists() and so.stat().st_mtime >= ref.onnx.stat().st_mtime and meta.exists() \
            and json.loads(meta.read_text()).get("route") == "tl2cgen"
        if fresh:
            out[name] = (str(so), symbol_for(name))
        elif required:
            raise ConfigError(f"tree_backend c: no up-to-date {so} (run `flashsim cabi {name}`)")
    return out


PROVENANCE_KEY = "flashsim_provenance"
CANDIDATE_INPUTS = frozenset(("evtNumber", "signal_role", "type", "p", "mcID", "mc_px", "mc_py", "mc_pz", "pv_x",
                              "pv_y", "pv_z", "chi2PerDoF", "isMuon", "RichDLLk", "RichDLLp", "MuonMuLL", "PIDK",
                              "PIDp", "PIDmu", "ProbNNk", "ProbNNp", "ProbNNpi", "ProbNNmu",
                              *(f"{c}_ClosestToBeam" for c in ("x", "y", "z", "tx", "ty")),
                              *(f"cov_ClosestToBeam_{i}_{j}" for i in range(5) for j in range(i, 5))))


def write_candidates(file, parts: list[dict[str, np.ndarray]], track_types: tuple[int, ...]) -> int:
    """Write the Lb0 -> Lc+ mu- candidate tree (:mod:`flashsim.runtime.candidates`) when the output holds signal
    decays; returns the number of candidates (0: no tree)."""
    from flashsim.runtime.candidates import TREE, candidate_tree

    parts = [p for p in parts if len(p.get("signal_role", ()))]
    if not parts:
        return 0
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    tree = candidate_tree(cols, track_types)
    if not tree or not len(tree["eventNumber"]):
        return 0
    file.mktree(TREE, {k: v.dtype for k, v in tree.items()})
    file[TREE].extend(tree)
    return len(tree["eventNumber"])



def tracks_only(chunks: Iterable[dict[str, np.ndarray]], census) -> Iterator[dict[str, np.ndarray]]:
    """The rows of ``chunks`` that become tracks (charged e, mu, pi, K, p); the others are counted in
    ``census`` (photons apart: they go to the ECAL stage where one is configured) and dropped, never turned
    into tracks."""
    from flashsim.runtime.io import is_track

    for chunk in chunks:
        pdg = np.asarray(chunk["mcID"])
        keep = is_track(pdg)
        if not keep.all():
            census.photons += int(np.sum(np.abs(pdg) == 22))
            for pid, k in zip(*np.unique(pdg[~keep & (np.abs(pdg) != 22)], return_counts=True), strict=True):
                census.others[int(pid)] += int(k)
            chunk = {k: np.asarray(v)[keep] for k, v in chunk.items()}
        if len(chunk["mcID"]):
            yield chunk


def _report(census, ecal_census=None) -> None:
    others = sum(census.others.values())
    lost = census.photons - (ecal_census.photons if ecal_census is not None else 0)  # photons no ECAL stage saw
    if ecal_census is not None:
        e = ecal_census.to_dict()
        log.info("ECAL: %d photons, %d in acceptance (%d dropped), %d clusters", e["photons"], e["in_acceptance"],
                 e["out_of_acceptance"], e["clusters"])
    if lost or others:
        top = ", ".join(f"{pid}: {k}" for pid, k in census.others.most_common(8))
        why = "no ECAL stage in this chain" if ecal_census is None else "not from HepMC input"
        log.warning("not simulated: %d photons (%s), %d other final-state particles%s", lost, why, others,
                    f" (PDG id: count {top})" if top else "")


def provenance(chain: Chain, settings: Settings, seed: int, census, args: argparse.Namespace,
               ecal_ref=None) -> dict:
    """What made an output file: each model (name, origin: registry URI + version or file path, ONNX sha256),
    the skipped stages, the seed, the input and the flashsim version."""
    import hashlib

    from flashsim import __version__

    models = {}
    roles = stage_roles(chain.spec)
    if ecal_ref is not None:
        roles[ecal_ref.name] = "ecal"
    for name, ref in [*chain.refs.items(), *([(ecal_ref.name, ecal_ref)] if ecal_ref is not None else [])]:
        models[name] = {"stage": roles.get(name, ""), "origin": ref.origin or str(ref.onnx),
                        "registry_version": ref.version or None,
                        "onnx_sha256": hashlib.sha256(Path(ref.onnx).read_bytes()).hexdigest()}
    skipped = [n for n in chain.spec.names() if n not in chain.refs]
    if ecal_ref is None and settings.ecal != "none":
        skipped.append(settings.ecal)
    return {"flashsim_version": __version__, "seed": seed, "models": models, "skipped": skipped,
            "device": str(chain.device), "input": args.input or args.gun or args.sample,
            "particles": census.to_dict()}


def to_device(cols: dict[str, np.ndarray], device: Device) -> dict[str, torch.Tensor]:
    import torch

    pin = device.kind == "cuda"
    out = {}
    for k, v in cols.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        out[k] = (t.pin_memory() if pin else t).to(device.torch, non_blocking=pin)
    return out


def run_chain(chain: Chain, chunks: Iterable[dict[str, np.ndarray]], *, seed: int, batch_size: int,
              keep: tuple[str, ...] = GENERATOR + EXTRAS, replay: Replay | None = None
              ) -> Iterator[dict[str, np.ndarray]]:
    """Simulate ``chunks`` batch by batch; yields output columns (kept input columns + simulated ones).

    ``replay``: draws for every input particle, in input order, used instead of the batches' own generators.
    """
    import torch

    from flashsim.runtime import features as F
    from flashsim.runtime.chain import batch_to_numpy

    index, offset = 0, 0
    outputs = chain.output_columns()
    for chunk in chunks:
        n = len(chunk["mcID"])
        for start in range(0, n, batch_size):
            part = {k: v[start:start + batch_size] for k, v in chunk.items()}
            batch = F.Batch(to_device(part, chain.device))
            gen = torch.Generator(device=chain.device.torch)
            gen.manual_seed(batch_seed(seed, index))
            part_replay = None if replay is None else replay.part(offset, offset + batch.n)
            offset += batch.n
            try:
                chain.run(batch, gen, part_replay)
            except KeyError as err:
                raise InputError(f"a model needs column {err} which the input does not provide",
                                 branch=str(err).strip("'")) from err
            index += 1
            cols = {k: part[k] for k in keep if k in part}
            cols.update(batch_to_numpy(batch, outputs))
            yield cols


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("sample", nargs="?", help="a sample of params.yaml inputs (e.g. signal)")
    src.add_argument("--input", nargs="+", metavar="FILE", help="ROOT file(s) with generator-level branches")
    src.add_argument("--gun", metavar="YAML", help="particle-gun configuration")
    p.add_argument("--tree", help="input tree (default: the sample's, or the file's only tree)")
    p.add_argument("--output", required=True, help="output ROOT file")
    p.add_argument("--models", help="models directory or MLflow URI template, e.g. 'models:/{name}@validated'")
    p.add_argument("--device", help="auto | cpu | cuda[:i]")
    p.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime (0: all cores)")
    p.add_argument("--batch-size", type=int, help="particles per chained batch (default: params runtime, by device)")
    p.add_argument("--io", choices=["binding", "host"])
    p.add_argument("--tree-backend", choices=["auto", "onnx", "c", "tensor"],
                   help="tree ensembles: their tl2cgen .so on the CPU (c), ONNX Runtime's TreeEnsemble (onnx), the "
                        "GEMM tensor form (tensor), or c where built on the CPU and tensor on a GPU (auto)")
    p.add_argument("--seed", type=int, help="master seed (default: params.yaml seed)")
    p.add_argument("--skip", action="append", metavar="STAGE", default=[],
                   help="run without this stage (acceptance, efficiency, resolution, covariance, pid, ecal, or a "
                        "model name); a missing model is otherwise an error")
    p.add_argument("--ecal", help="ECAL model of the photons (HepMC input): ecal_gnn | ecal_transformer | none "
                                  "(default: params runtime.ecal)")
    p.add_argument("--max-particles", type=int)
    p.add_argument("--params", help="params file (default: params.yaml)")


def run(args: argparse.Namespace) -> int:
    from flashsim.config import load_params
    from flashsim.detector import ecal_geometry
    from flashsim.io.atomic import atomic_output
    from flashsim.progress import Progress
    from flashsim.runtime import ecal as E
    from flashsim.runtime import hepmc, io

    params = load_params(args.params)
    settings = Settings.from_params(params)
    for k in ("models", "device", "threads", "batch_size", "io", "tree_backend", "ecal"):
        v = getattr(args, k)
        if v is not None:
            setattr(settings, k, v)
    if args.batch_size is not None:
        settings.cpu_batch_size = args.batch_size
    if args.skip:
        settings.skip = tuple(dict.fromkeys([*settings.skip, *args.skip]))
    seed = params["seed"] if args.seed is None else args.seed
    census = hepmc.Census()
    photons: list = []
    step = params.get("prepare", {}).get("step_size", 200_000)
    if args.gun:
        cfg = io.load_gun(args.gun)
        if args.max_particles:
            cfg["n"] = min(int(cfg["n"]), args.max_particles)
        chunks, total = io.particle_gun(cfg, cfg.get("seed", seed), chunk=step), int(cfg["n"])
    elif args.input and all(hepmc.is_hepmc(f) for f in args.input):
        chunks, total = hepmc.read(args.input, step, args.max_particles, census, photons), None
    elif args.input:
        if any(hepmc.is_hepmc(f) for f in args.input):
            raise ConfigError("--input: give either HepMC files or ROOT files, not both")
        chunks, total = io.read_root(args.input, args.tree, step_size=step, max_entries=args.max_particles), None
    else:
        chunks, total = io.read_sample(args.sample, params, step_size=step, max_entries=args.max_particles), None
    chain = build_chain(settings)
    ecal_ref = E.resolve_model(settings.ecal, settings.models, settings.skip)
    ecal_census = E.EcalCensus() if ecal_ref is not None else None
    log.info("chain on %s: %s", chain.device, " -> ".join(chain.stages))
    t0, n = time.perf_counter(), 0
    with atomic_output(args.output) as tmp:
        writer = io.NtupleWriter(tmp, OUT_TREE, settings.compression)
        signal_rows = []
        with Progress(total, "simulate", unit="particles") as bar:
            for cols in run_chain(chain, tracks_only(chunks, census), seed=seed,
                                  batch_size=settings.chain_batch(chain.device)):
                writer.write(cols)
                n += len(cols["mcID"])
                bar.update(len(cols["mcID"]))
                if "signal_role" in cols:  # kept for the candidate tree (only the columns it reads)
                    sel = np.asarray(cols["signal_role"]) > 0
                    signal_rows.append({k: v[sel] for k, v in cols.items() if k in CANDIDATE_INPUTS})
        if not writer.entries:
            raise InputError("no track-like particle (charged e, mu, pi, K, p) in the input",
                             file=", ".join(args.input or [args.gun or args.sample]))
        n_cand = write_candidates(writer.file, signal_rows,
                                  tuple(params.get("physics_check", {}).get("track_types", [3])))
        prov = {**provenance(chain, settings, seed, census, args, ecal_ref), "entries": writer.entries,
                "candidates": n_cand}
        if ecal_ref is not None:
            model = E.EcalModel(ecal_ref.onnx, E.card_geometry(ecal_ref, ecal_geometry(params)), settings.threads)
            clusters = E.simulate(model, photons, seed, ecal_census)
            E.write(writer.file, clusters)
            prov["ecal"] = ecal_census.to_dict()
        writer.file[PROVENANCE_KEY] = json.dumps(prov, sort_keys=True)
        writer.close()
    _report(census, ecal_census)
    dt = time.perf_counter() - t0
    log.info("simulated %d particles in %.1f s (%.3g particles/s) -> %s", n, dt, n / max(dt, 1e-9), args.output)
    return 0
