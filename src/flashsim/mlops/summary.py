"""``flashsim summarize``: one metrics file and plot tables over all validated models, for DVC.

Reads ``reports/<NAME>/metrics.json`` (validation) and ``results/train/<NAME>/trained.json`` (training history) and
writes, atomically:

* ``reports/metrics.json``: ``{NAME: {metric: value, ..., passed, worst_gate_margin}}`` (``dvc metrics show/diff``,
  ``dvc exp show``);
* ``reports/summary.csv``: one row per model (passed, worst_gate_margin, gates) for the validation bar plot;
* ``reports/training/<NAME>.csv``: per-epoch training metrics for the training-curve plots.

``worst_gate_margin`` compares models of different kinds on one scale: the smallest relative distance of a metric to
its gate, ``(max - value) / |max|`` or ``(value - min) / |min|``; negative means a gate failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from flashsim.io.atomic import write_json, write_text

HELP = "summarise every model's validation metrics and training history for DVC (reports/metrics.json, plots)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="reports directory (default: reports)")
    parser.add_argument("--train", type=Path, default=Path("results/train"),
                        help="training outputs (default: results/train)")
    parser.add_argument("models", nargs="*", help="models to include (default: every reports/<NAME>/metrics.json)")


def gate_margin(gate: dict[str, Any]) -> float:
    value = gate.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    margins = []
    for key, sign in (("max", 1.0), ("min", -1.0)):
        if key in gate:
            limit = float(gate[key])
            margins.append(sign * (limit - float(value)) / (abs(limit) or 1.0))
    return min(margins) if margins else math.inf


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def summarize(reports: Path, train: Path, models: list[str] | None = None) -> dict[str, dict[str, Any]]:
    names = models or sorted(p.parent.name for p in reports.glob("*/metrics.json"))
    summary: dict[str, dict[str, Any]] = {}
    rows = []
    for name in names:
        data = json.loads((reports / name / "metrics.json").read_text())
        gates = data.get("gates") or []
        margins = [gate_margin(g) for g in gates]
        worst = min(margins) if margins else None
        entry = {k: float(v) for k, v in sorted((data.get("metrics") or {}).items()) if _finite(v)}
        entry["passed"] = bool(data.get("passed", False))
        if worst is not None and math.isfinite(worst):
            entry["worst_gate_margin"] = worst
        summary[name] = entry
        rows.append({"model": name, "family": data.get("family", ""), "passed": int(entry["passed"]),
                     "worst_gate_margin": "" if worst is None or not math.isfinite(worst) else f"{worst:.6g}",
                     "gates": ";".join(f"{g['metric']}={g.get('value')}" for g in gates)})
        history = _history(train / name / "trained.json")
        if history:
            write_text(reports / "training" / f"{name}.csv", history)
    write_json(reports / "metrics.json", summary)
    out = io.StringIO()
    writer = csv.DictWriter(out, ["model", "family", "passed", "worst_gate_margin", "gates"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(reports / "summary.csv", out.getvalue())
    return summary


def _history(path: Path) -> str | None:
    """Per-epoch history of a trained model as CSV (columns: epoch + every numeric key)."""
    try:
        history = json.loads(path.read_text()).get("history") or []
    except (OSError, ValueError):
        return None
    rows = [h for h in history if isinstance(h, dict) and "epoch" in h]
    if not rows:
        return None
    keys = ["epoch", *sorted({k for h in rows for k, v in h.items() if k != "epoch" and _finite(v)})]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keys)
    for h in rows:
        writer.writerow([h.get(k, "") if _finite(h.get(k)) or k == "epoch" else "" for k in keys])
    return out.getvalue()


def run(args: argparse.Namespace) -> int:
    summary = summarize(args.reports, args.train, args.models or None)
    passed = sum(v["passed"] for v in summary.values())
    print(f"{len(summary)} models summarised in {args.reports}/metrics.json ({passed} passed their gates)")
    return 0
