"""``flashsim generate SAMPLE --output FILE``: run the reference detector simulation into a ROOT file."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

from flashsim.errors import ConfigError, FlashsimError

HELP = "generate a reference-simulation sample (seeded, chunked, bit-reproducible) into a ROOT file"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sample", help="sample name in params.yaml detsim.samples (e.g. tracking, signal, calib_mu)")
    p.add_argument("--output", "-o", required=True, type=Path, help="ROOT file to write (atomically)")
    p.add_argument("--size", type=int, help="entries to generate (default: detsim.samples.<sample>.size at scale)")
    p.add_argument("--seed", type=int, help="master seed (default: params seed)")
    p.add_argument("--chunk-size", type=int, help="entries per chunk (default: detsim.chunk_size)")
    p.add_argument("--params", type=Path, help="params file (default: params.yaml of the repository)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def sample_settings(params: dict, sample: str) -> dict:
    """The resolved settings for generating ``sample``: kind, options (the sample's entry plus the configured
    ``detector`` geometry), size, seed, chunk size, tree, renames."""
    from flashsim.config import resolve_scale
    from flashsim.detsim.samples import KINDS

    samples = params["detsim"]["samples"]
    if sample not in samples:
        raise ConfigError(f"unknown sample {sample!r}; params.yaml detsim.samples has: {', '.join(samples)}")
    options = {**resolve_scale(samples[sample], params["scale"]), "detector": params.get("detector", {})}
    if options["kind"] not in KINDS:
        raise ConfigError(f"detsim.samples.{sample}.kind: unknown kind {options['kind']!r}")
    inputs = params.get("inputs", {}).get(sample, {})
    return {
        "kind": options["kind"], "options": options, "size": int(options["size"]), "seed": int(params["seed"]),
        "chunk_size": int(params["detsim"]["chunk_size"]), "tree": inputs.get("tree"),
        "rename": dict(inputs.get("branches", {})), "compression": params["detsim"]["compression"],
        "level": int(params["detsim"]["compression_level"]),
        "min_saving": float(params["detsim"]["min_compression_saving"]),
    }


def generate(sample: str, output: str | Path, settings: dict, progress: bool = True) -> dict:
    """Generate ``sample`` with resolved ``settings`` (see :func:`sample_settings`) into ``output``.

    Returns a summary: entries written, seconds, file size.
    """
    from flashsim.detsim import samples as registry
    from flashsim.detsim import writer
    from flashsim.io.contract import SAMPLES
    from flashsim.progress import Progress

    kind, n, chunk_size = settings["kind"], settings["size"], settings["chunk_size"]
    try:
        module = registry.kind_module(kind)
    except ImportError as err:
        raise ConfigError(f"sample kind {kind!r} is not available in this installation: {err}") from err
    rng_for = registry.rng_factory(settings["seed"], sample)
    bar = Progress(n, f"generate {sample}", unit=getattr(module, "UNIT", "entries"), enabled=progress)

    per_unit = getattr(module, "ENTRIES_PER_UNIT", 1)  # file entries per unit of size (signal: 4 per decay)

    def counted() -> Iterator[dict]:
        for chunk in module.chunks(n, chunk_size, rng_for, settings["options"]):
            yield chunk
            bar.update(len(next(iter(chunk.values()))) // per_unit)

    t0 = time.perf_counter()
    try:
        entries = writer.write_root(
            output, counted(), SAMPLES[kind], tree=settings["tree"], rename=settings["rename"],
            compression=settings["compression"], level=settings["level"], min_saving=settings["min_saving"],
            uuid_key=f"{sample}:{settings['seed']}:{n}:{chunk_size}")
    except OSError as err:
        raise FlashsimError(f"cannot write {output}: {err}") from err
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return {"sample": sample, "kind": kind, "size": n, "entries": entries, "chunks": math.ceil(n / chunk_size),
            "seconds": seconds, "bytes": Path(output).stat().st_size}


def run(args: argparse.Namespace) -> int:
    from flashsim.config import load_params

    params = load_params(args.params)
    settings = sample_settings(params, args.sample)
    for key, value in (("size", args.size), ("seed", args.seed), ("chunk_size", args.chunk_size)):
        if value is not None:
            if value < (0 if key == "seed" else 1):
                raise ConfigError(f"--{key.replace('_', '-')} must be positive, got {value}")
            settings[key] = value
    summary = generate(args.sample, args.output, settings, progress=not args.no_progress)
    log.info("%s: %d entries (%s) in %.1f s -> %s (%.1f MB)", args.sample, summary["entries"], summary["kind"],
             summary["seconds"], args.output, summary["bytes"] / 1e6)
    return 0
