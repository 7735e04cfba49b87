"""``flashsim ecal-report``: one comparison page of the ECAL models (``reports/ecal/index.html``).

Reads each model's ``reports/<name>/metrics.json`` and ``ecal_summary.npz`` (written by ``flashsim validate``)
and, when present, the ECAL benchmark (``reports/bench/ecal.json``), and overlays the models on the same
reference: cluster multiplicity, matched-cluster residuals, energy scale and resolution, plus a metrics table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flashsim.errors import InputError
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
    summaries, metrics, gates, scales = {}, {}, {}, set()
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
        scales.add(str(data.get("scale") or ""))
    plots = [EV.plot_multiplicity(ref, summaries, out / "multiplicity.png"),
             EV.plot_residuals(ref, summaries, out / "residuals.png"),
             EV.plot_energy_scale(ref, summaries, out / "energy_scale.png")]
    bench = _bench(reports / "bench" / "ecal.json")
    page = _page(out, models, metrics, gates, plots, bench, ", ".join(sorted(scales - {""})))
    from flashsim.validation.report import write_index

    write_index(reports)  # lists this page under "Other pages"
    return page


def _bench(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _page(out: Path, models: list[str], metrics: dict, gates: dict, plots: list[Path], bench: dict | None,
          scale: str) -> Path:
    from flashsim.validation.report import figure_links, gate_rows, mlflow_info, page_header, render

    head = page_header(", ".join(models), scale, mlflow_note="one run per model: see the model's page")
    runs = [i for i in (mlflow_info(m) for m in models) if i]
    head["mlflow"] = runs[0] if len(models) == 1 and runs else None
    if bench:
        env = bench.get("environment") or {}
        bench = {"environment": {"cpu_model": env.get("cpu_model", ""), "load_average": env.get("load_average", "")},
                 "cuda_device": bench.get("cuda_device"),
                 "results": [{k: r.get(k, "") for k in ("model", "device", "photons_per_event", "events_per_s",
                                                         "events_per_s_model_only")}
                             for r in bench.get("results", [])]}
    rows = gate_rows([{**g, "metric": f"{m}: {g['metric']}"} for m in models for g in gates[m]])
    return render("ecal.html", out / "index.html", title="ECAL models: " + " vs ".join(models), head=head,
                  index_href="../index.html", gates=rows, passed=all(r["passed"] for r in rows), models=models,
                  status={m: all(g["passed"] for g in gates[m]) for m in models}, table=TABLE, metrics=metrics,
                  bench=bench, plots=figure_links(out, plots))


def run(args: argparse.Namespace) -> int:
    from flashsim.config import repo_root

    reports = args.reports or repo_root() / "reports"
    print(f"-> {write_comparison(Path(reports), list(args.models))}")
    return 0
