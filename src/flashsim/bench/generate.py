"""Benchmark ``generate``: generated + written particles per second on one core (tracking sample).

Runs the real pipeline (the ``tracking`` kind's chunks into :func:`flashsim.detsim.writer.write_root`) pinned to
one CPU, at the configured chunk size and compression, at full scale (``--quick``: 1e6 particles), and splits the
time into generation and writing.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from flashsim.bench import one_core

HELP = "generated + written particles/s on one core (tracking sample, full-scale chunking)"
TARGET_RATE = 1e6  # particles / s
QUICK_SIZE = 1_000_000


def run(quick: bool, params: dict, size: int | None = None) -> dict:
    """Measure on one pinned core (``size`` overrides the number of particles)."""
    with one_core() as cpus:
        return _measure(quick, params, size, cpus)


def _measure(quick: bool, params: dict, size: int | None, cpus: list[int] | None) -> dict:
    from flashsim.config import at_scale, repo_root
    from flashsim.detsim import tracking, writer
    from flashsim.io.contract import TRACKING
    from flashsim.seeding import rng_factory

    det = params["detsim"]
    chunk_size = int(det["chunk_size"])
    n = size or (QUICK_SIZE if quick else int(at_scale(det["samples"]["tracking"]["size"], "full")))
    rng_for = rng_factory(int(params["seed"]), "tracking")
    tracking.make_chunk(0, min(chunk_size, 10_000), chunk_size, rng_for(0))  # warm-up: imports, allocator

    gen_wall = 0.0
    gen_cpu = 0.0

    def timed_chunks():
        nonlocal gen_wall, gen_cpu
        it = tracking.chunks(n, chunk_size, rng_for, {})
        while True:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                chunk = next(it)
            except StopIteration:
                return
            gen_wall += time.perf_counter() - t0
            gen_cpu += time.process_time() - c0
            yield chunk

    scratch = repo_root() / "results" / "bench"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        out = Path(tmp) / "tracking.root"
        t0, c0 = time.perf_counter(), time.process_time()
        entries = writer.write_root(out, timed_chunks(), TRACKING, compression=det["compression"],
                                    level=int(det["compression_level"]),
                                    min_saving=float(det["min_compression_saving"]), uuid_key="bench")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = out.stat().st_size
    rate = entries / wall
    return {
        "sample": "tracking", "particles": entries, "chunk_size": chunk_size, "compression": det["compression"],
        "pinned_cpus": cpus, "seconds_wall": wall, "seconds_cpu": cpu,
        "particles_per_s": rate, "particles_per_s_cpu": entries / cpu,
        "generation_particles_per_s": entries / gen_wall, "generation_share_of_wall": gen_wall / wall,
        "write_particles_per_s": entries / max(wall - gen_wall, 1e-9),
        "file_bytes": size, "bytes_per_particle": size / entries, "write_MB_per_s": size / 1e6 / wall,
        "target_particles_per_s": TARGET_RATE, "meets_target": rate >= TARGET_RATE,
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def summary(r: dict) -> str:
    return (f"generate: {r['particles']:.3g} particles in {r['seconds_wall']:.2f} s wall ({r['seconds_cpu']:.2f} s cpu)"
            f" on cpu {r['pinned_cpus']}: {r['particles_per_s']:.3g}/s wall, {r['particles_per_s_cpu']:.3g}/s cpu "
            f"(generation alone {r['generation_particles_per_s']:.3g}/s, {r['generation_share_of_wall']:.0%} of wall);"
            f" target {r['target_particles_per_s']:.0e}/s: {'met' if r['meets_target'] else 'NOT met'}")
