"""``flashsim ecal-report``: one comparison page of the ECAL models (``reports/ecal/index.html``).

Reads each model's ``reports/<name>/metrics.json`` and ``ecal_summary.npz`` (written by ``flashsim validate``)
and, when present, the ECAL benchmark (``reports/bench/ecal.json``), and overlays the models on the same
reference: cluster multiplicity, matched-cluster residuals, energy scale and resolution, plus a metrics table.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import numpy as np

from flashsim.errors import InputError
from flashsim.io.atomic import write_text
from flashsim.validation import ecal as EV

HELP = "write the ECAL models' comparison page (reports/ecal/index.html)"
DEFAULT_MODELS = ("ecal_gnn", "ecal_transformer")
TABLE = [
    ("two_sample_auc", "two-sample AUC on cluster features (0.5 = indistinguishable)"),
    ("multiplicity.mean_ref", "clusters per event, reference"),
    ("multiplicity.mean_model", "clusters per event, model"),
    ("multiplicity.ks", "KS of clusters per event"),
    ("multiplicity.lost_ks", "KS of photons - clusters per event"),
    ("unmatched.photon_rate_ref", "photons without a cluster, reference"),
    ("unmatched.photon_rate_model", "photons without a cluster, model"),
    ("unmatched.cluster_rate_ref", "clusters without a photon, reference"),
    ("unmatched.cluster_rate_model", "clusters without a photon, model"),
    ("residual.dx", "KS of matched dx"),
    ("residual.dy", "KS of matched dy"),
    ("residual.E_ratio", "KS of matched E / E_photon"),
    ("energy_scale.max_abs_diff", "max |scale difference| over energy bins"),
    ("energy_resolution.max_rel_diff", "max relative resolution difference over energy bins"),
    ("validate_seconds", "validation time [s]"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="models to compare")
    p.add_argument("--reports", type=Path, default=None, help="reports directory (default: reports/)")


def write_comparison(reports: Path, models: list[str]) -> Path:
    """Build ``reports/ecal/index.html`` (+ overlay PNGs) from the models' validation outputs."""
    out = reports / "ecal"
    summaries, metrics, gates = {}, {}, {}
    ref = None
    for name in models:
        npz, mj = reports / name / "ecal_summary.npz", reports / name / "metrics.json"
        for f in (npz, mj):
            if not f.exists():
                raise InputError(f"validation output of {name} missing (run `flashsim validate {name}`)", file=str(f))
        r, g = EV.load_summary(npz)
        ref = ref if ref is not None else r
        if len(r["n_photons"]) != len(ref["n_photons"]) or not np.array_equal(r["n_photons"], ref["n_photons"]):
            raise InputError(f"{name} was validated on other events than {models[0]}", file=str(npz))
        summaries[name] = g
        data = json.loads(mj.read_text())
        metrics[name], gates[name] = data["metrics"], data.get("gates", [])
    plots = [EV.plot_multiplicity(ref, summaries, out / "multiplicity.png"),
             EV.plot_residuals(ref, summaries, out / "residuals.png"),
             EV.plot_energy_scale(ref, summaries, out / "energy_scale.png")]
    bench = _bench(reports / "bench" / "ecal.json")
    page = _page(out, models, metrics, gates, plots, bench)
    from flashsim.validation.report import write_index

    write_index(reports)  # lists this page under "Other pages"
    return page


def _bench(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _page(out: Path, models: list[str], metrics: dict, gates: dict, plots: list[Path], bench: dict | None) -> Path:
    from flashsim.validation.report import CSS

    head = "".join(f"<th><a href='../{html.escape(m)}/index.html'>{html.escape(m)}</a></th>" for m in models)
    rows = [f"<tr><th>metric</th>{head}</tr>"]
    status = "".join(
        f"<td class='{'pass' if all(g['passed'] for g in gates[m]) else 'fail'}'>"
        f"{'PASS' if all(g['passed'] for g in gates[m]) else 'FAIL'}</td>" for m in models)
    rows.append(f"<tr><td>gates</td>{status}</tr>")
    for key, doc in TABLE:
        cells = "".join(f"<td>{_fmt(metrics[m].get(key, ''))}</td>" for m in models)
        rows.append(f"<tr><td title='{html.escape(key)}'>{html.escape(doc)}</td>{cells}</tr>")
    lines = [f"<!doctype html><html><head><meta charset='utf-8'><title>ECAL models</title><style>{CSS}</style>"
             "</head><body><p><a href='../index.html'>all models</a></p><h1>ECAL models: GNN vs Transformer</h1>",
             "<p>Same test events, same reference clusters, same geometric matching for both models.</p>",
             "<table>", *rows, "</table>"]
    if bench:
        env = bench.get("environment", {})
        lines.append("<h2>Throughput (events/s, <code>flashsim bench ecal</code>)</h2>"
                     f"<p>{html.escape(str(env.get('cpu_model', '')))}; load average "
                     f"{html.escape(str(env.get('load_average', '')))}; GPU: "
                     f"{html.escape(str(bench.get('cuda_device') or 'none'))}. CPU: one pinned core, one thread; "
                     "'with preprocessing' includes building the GNN edges or padding.</p>"
                     "<table><tr><th>model</th><th>device</th><th>photons/event</th><th>events/s with preprocessing"
                     "</th><th>events/s graph only</th></tr>")
        for r in bench.get("results", []):
            lines.append(f"<tr><td>{html.escape(str(r.get('model')))}</td><td>{html.escape(str(r.get('device')))}"
                         f"</td><td>{_fmt(r.get('photons_per_event'))}</td><td>{_fmt(r.get('events_per_s'))}</td>"
                         f"<td>{_fmt(r.get('events_per_s_model_only'))}</td></tr>")
        lines.append("</table>")
    lines.append("<h2>Overlays</h2>")
    lines += [f"<div><img src='{html.escape(p.name)}' alt='{html.escape(p.name)}'></div>" for p in plots]
    lines.append("</body></html>")
    path = out / "index.html"
    write_text(path, "\n".join(lines))
    return path


def run(args: argparse.Namespace) -> int:
    from flashsim.config import repo_root

    reports = args.reports or repo_root() / "reports"
    print(f"-> {write_comparison(Path(reports), list(args.models))}")
    return 0
