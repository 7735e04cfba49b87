"""``flashsim compare [NAMES...]``: registered versions side by side with their aliases and validation metrics."""

from __future__ import annotations

import argparse
import fnmatch
import json
from typing import Any

HELP = "compare registered model versions: aliases, gates, runs and validation metrics side by side"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="registered model names (default: all)")
    parser.add_argument("--metrics", default=None, metavar="GLOB",
                        help="validation metrics matching this glob (without the 'validation.' prefix); "
                             "default: the gated metrics (all metrics for versions without gates)")
    parser.add_argument("--last", type=int, default=0, metavar="N", help="only the N newest versions per model")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(value) or "-"
    return str(value) if value not in ("", None) else "-"


def table(rows: list[list[str]]) -> str:
    """Plain-text table; first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def model_block(name: str, versions: list[dict[str, Any]], metric_glob: str | None = None) -> str:
    """One model: a column per version, a row per field and per validation metric (gated ones: with the gate)."""
    gated = {m for v in versions for m in v.get("gate_limits", {})}
    if metric_glob is None and gated:
        metrics = sorted(f"validation.{m}" for m in gated)
    else:
        metrics = sorted({m for v in versions for m in v["metrics"]
                          if fnmatch.fnmatch(m.removeprefix("validation."), metric_glob or "*")})
    rows = [[name, *(f"v{v['version']}" for v in versions)]]
    for field in ("aliases", "gates", "created", "git_sha", "run_id"):
        rows.append([field, *(_fmt(v[field][:10] if field in ("git_sha", "run_id") else v[field])
                              for v in versions)])
    for m in metrics:
        short = m.removeprefix("validation.")
        limits = {v.get("gate_limits", {}).get(short, "").rsplit(" ", 1)[0] for v in versions} - {""}
        label = f"{short} ({' | '.join(sorted(limits))})" if limits else short
        rows.append([label, *(_fmt(v["metrics"].get(m, "")) for v in versions)])
    return table(rows)


def run(args: argparse.Namespace) -> int:
    from flashsim.mlops import model_registry

    store = model_registry.registry_store()
    out = {}
    for name in model_registry.model_names(store, args.names):
        versions = model_registry.version_rows(store, name)
        out[name] = versions[-args.last:] if args.last > 0 else versions
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if not out:
        print(f"no registered models in {store.uri}")
        return 0
    print(f"MLflow store: {store.uri}\n")
    print("\n\n".join(model_block(name, versions, args.metrics) for name, versions in out.items()))
    return 0
