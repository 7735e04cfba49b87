"""``flashsim bench [TARGET]``: benchmarks that write their figures as JSON (``reports/bench/TARGET.json``).

Without a target: ``runtime`` (the flash-simulation chain vs the per-particle C path, CPU and GPU;
``flashsim bench --quick`` is its short CPU run); ``flashsim bench all`` runs every registered target in turn.

Targets are a registry (name -> module); a target module defines ``HELP`` and
``run(quick: bool, params: dict) -> dict`` returning JSON-serialisable results. Add one with a line in TARGETS.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HELP = "run a benchmark target and write its results as JSON"
TARGETS: dict[str, str] = {
    "generate": "flashsim.bench.generate",
    "ghost_mlp": "flashsim.bench.ghost_mlp",
    "ecal": "flashsim.bench.ecal",
    "pid": "flashsim.bench.pid",
    "pid_train": "flashsim.bench.pid_train",
    "runtime": "flashsim.bench.runtime",
    "sqlamarr": "flashsim.bench.sqlamarr",
    "tracking": "flashsim.bench.tracking",
    "tune": "flashsim.bench.tune",
}


DEFAULT_TARGET = "runtime"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", default=DEFAULT_TARGET, choices=[*sorted(TARGETS), "all"],
                   help=f"what to benchmark (default: {DEFAULT_TARGET}; all: every target)")
    p.add_argument("--quick", action="store_true", help="a short run (smaller sizes) for smoke tests")
    p.add_argument("--out", type=Path, help="JSON output (default: reports/bench/TARGET.json)")
    p.add_argument("--params", type=Path, help="params file (default: params.yaml of the repository)")


@contextlib.contextmanager
def one_core() -> Iterator[list[int] | None]:
    """Pin this process (its future threads and children too) to one CPU inside the block, with torch's intra-op
    threads at 1 when torch is loaded; yields the CPU list (None where unsupported). Restores both afterwards."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield [cpu]
    finally:
        os.sched_setaffinity(0, before)
        if torch is not None:
            torch.set_num_threads(threads)


def throughput(fn: Callable[[], object], items: int, min_seconds: float = 1.0, sync: Callable[[], None] | None = None,
               max_reps: int = 1000) -> dict:
    """Call ``fn`` (after one warm-up call) until ``min_seconds`` passed; items/s from wall and CPU time."""
    sync = sync or (lambda: None)
    fn()
    sync()
    reps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        reps += 1
        if reps >= max_reps or time.perf_counter() - t0 >= min_seconds:
            break
    sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"items": items, "reps": reps, "seconds": wall, "items_per_s": items * reps / wall,
            "items_per_s_cpu": items * reps / max(cpu, 1e-9)}


def run(args: argparse.Namespace) -> int:
    from flashsim.config import load_params, repo_root
    from flashsim.io.atomic import write_json
    from flashsim.mlops.provenance import environment

    params = load_params(args.params)
    targets = list(TARGETS) if args.target == "all" else [args.target]
    if args.out and len(targets) > 1:
        from flashsim.errors import ConfigError

        raise ConfigError("--out needs a single TARGET")
    for target in targets:
        module = importlib.import_module(TARGETS[target])
        result = {"target": target, "quick": bool(args.quick), "environment": environment(("numpy",), machine=True),
                  **module.run(quick=args.quick, params=params)}
        out = args.out or repo_root() / "reports" / "bench" / f"{target}.json"
        write_json(out, result)
        print(module.summary(result) if hasattr(module, "summary") else result)
        print(f"-> {out}")
    return 0
