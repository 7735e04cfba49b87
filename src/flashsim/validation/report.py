"""HTML reports from jinja2 templates (``validation/templates``): one page per model and ``reports/index.html``.

Every page starts with the same header (:func:`page_header`): model, scale, git sha, date, the MLflow run (and
registered version) with a link when the tracking server has a web UI, and the gate table with a one-line
glossary of each metric (:mod:`flashsim.validation.glossary`). The plots live in :mod:`flashsim.validation.plots`
(re-exported here).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flashsim.io.atomic import write_text
from flashsim.validation.glossary import explain
from flashsim.validation.plots import (
    axis_label,
    plot_binned,
    plot_calibration,
    plot_distributions,
    plot_efficiency_curves,
    plot_history,
    pyplot,
    save_figure,
)

__all__ = ["axis_label", "collect_figures", "figure_links", "gate_rows", "mlflow_info", "page_header",
           "plot_binned", "plot_calibration", "plot_distributions", "plot_efficiency_curves", "plot_history", "pyplot",
           "render", "save_figure", "write_index", "write_model_page"]

MLFLOW_STATE = "results/train/{model}/mlflow.json"  # written by flashsim.mlops.runs (its STATE_FILE)
FIGURES = "figures"  # reports/<name>/figures/: the plots of a model page, one folder for `snakemake --report`


def _num(v: Any) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("flashsim.validation", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["explain"] = explain
    return env


def render(template: str, path: str | Path, **context: Any) -> Path:
    """Render ``templates/<template>`` with ``context`` into ``path`` (atomically)."""
    text = _environment().get_template(template).render(**context)
    path = Path(path)
    write_text(path, text)
    return path


MLFLOW_UI_VIEW = "machine_learning"
"""The MLflow UI's view for links (``?workflowType=``): MLflow 3.17 opens in its GenAI view and, while its workflow
selector is on, ignores the experiment's ``mlflow.experimentKind``; this opens the runs of a training."""


def mlflow_info(model: str, root: str | Path | None = None, *, run_id: str | None = None,
                tracking_uri: str | None = None, experiment: str | None = None,
                version: str | None = None) -> dict | None:
    """The model's MLflow run (given, else from ``results/train/<model>/mlflow.json``) with links into the MLflow
    UI when the tracking URI is a web server; None when no run was recorded."""
    if run_id is None:
        from flashsim.config import repo_root

        state = Path(root or repo_root()) / MLFLOW_STATE.format(model=model)
        try:
            data = json.loads(state.read_text())
        except (OSError, ValueError):
            return None
        run_id, tracking_uri = data.get("run_id"), tracking_uri or data.get("tracking_uri")
        experiment = experiment or data.get("experiment")
    if not run_id:
        return None
    uri = str(tracking_uri or "")
    web = uri.startswith(("http://", "https://"))
    base = uri.rstrip("/")
    view = f"?workflowType={MLFLOW_UI_VIEW}"
    return {"run_id": run_id, "tracking_uri": uri, "experiment": experiment or "",
            "run_link": f"{base}/#/runs/{run_id}{view}" if web else "",
            "version": str(version) if version else "",
            "version_link": f"{base}/#/models/{model}/versions/{version}{view}" if web and version else ""}


def page_header(model: str = "", scale: str | None = None, *, family: str = "", root: str | Path | None = None,
                mlflow: dict | None = None, mlflow_note: str = "no run recorded (FLASHSIM_MLFLOW off)") -> dict:
    """What every page's header shows: model, family, scale, git sha (of the code), date (UTC), MLflow run
    (``mlflow``: :func:`mlflow_info`; ``mlflow_note`` is shown without one)."""
    from flashsim.mlops.provenance import code_root, git

    code = code_root(Path(root) if root else None)  # the checkout running this code, else the project
    sha = (git(code, "rev-parse", "--short=10", "HEAD") or "").strip() or "unknown"
    dirty = bool((git(code, "status", "--porcelain", "--untracked-files=no") or "").strip())
    return {"model": model, "family": family, "scale": scale or "", "git_sha": sha, "git_dirty": dirty,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "mlflow": mlflow, "mlflow_note": mlflow_note}


def gate_rows(gates: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Gate results (:func:`flashsim.validation.gates.evaluate_gates`) as the header's table rows."""
    return [{"metric": str(g["metric"]), "value": g.get("value"), "min": g.get("min", ""), "max": g.get("max", ""),
             "passed": bool(g["passed"])} for g in gates]


def collect_figures(report_dir: str | Path, plots: Sequence[str | Path]) -> list[Path]:
    """Move ``plots`` (PNG and their PDF copies) into ``<report_dir>/figures/``, dropping figures left there by an
    earlier run; returns the new PNG paths."""
    dest = Path(report_dir) / FIGURES
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in map(Path, plots):
        for f in (p, p.with_suffix(".pdf")):
            if f.exists() and f.parent.resolve() != dest.resolve():
                os.replace(f, dest / f.name)
        out.append(dest / p.name)
    keep = {q.name for p in out for q in (p, p.with_suffix(".pdf"))}
    for stale in dest.iterdir():
        if stale.is_file() and stale.name not in keep:
            stale.unlink()
    return out


def figure_links(page_dir: Path, plots: Sequence[str | Path]) -> list[dict]:
    """``{png, pdf}`` links relative to the page in ``page_dir`` (pdf empty without a PDF copy)."""
    out = []
    for p in plots:
        png = Path(p) if Path(p).is_absolute() or Path(p).parent != Path(".") else page_dir / p
        pdf = png.with_suffix(".pdf")
        out.append({"png": Path(os.path.relpath(png, page_dir)).as_posix(),
                    "pdf": Path(os.path.relpath(pdf, page_dir)).as_posix() if pdf.exists() else ""})
    return out


def write_model_page(report_dir: str | Path, name: str, metrics: Mapping[str, Any], gates: list[dict],
                     plots: Sequence[str | Path], card: dict | None = None, *, header: dict | None = None) -> Path:
    """``reports/<name>/index.html``: header with gates, plots (PNG with PDF links), all metrics, model card."""
    report_dir = Path(report_dir)
    head = header or page_header(name)
    shown = sorted((k, v) for k, v in metrics.items() if isinstance(v, int | float | str))
    card_text = json.dumps({k: card.get(k) for k in ("inputs", "outputs", "training_data", "parity") if k in card},
                           indent=1) if card else ""
    return render("model.html", report_dir / "index.html", title=name, head=head, index_href="../index.html",
                  gates=gate_rows(gates), passed=all(g["passed"] for g in gates), plots=figure_links(report_dir, plots),
                  metrics=shown, card=card_text)


def write_index(reports_root: str | Path) -> Path:
    """``reports/index.html`` listing every ``reports/*/metrics.json`` with its gate status."""
    root = Path(reports_root)
    rows, scales = [], set()
    for mj in sorted(root.glob("*/metrics.json")):
        try:
            data = json.loads(mj.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        gates = data.get("gates", [])
        scales.add(str(data.get("scale", "")))
        rows.append({"name": mj.parent.name, "family": str(data.get("family", "")), "scale": data.get("scale", ""),
                     "passed": all(g.get("passed") for g in gates),
                     "summary": ", ".join(f"{g['metric']}={_num(g['value'])}" for g in gates[:4])})
    # other pages (e.g. comparisons of several models): report folders with an index.html but no metrics.json
    pages = [d.name for d in sorted(root.iterdir()) if d.is_dir() and (d / "index.html").exists()
             and not (d / "metrics.json").exists()] if root.is_dir() else []
    scale = ", ".join(sorted(s for s in scales if s))
    head = page_header(scale=scale, mlflow_note="one run per model: see the model's page")
    return render("index.html", root / "index.html", title="flashsim models", head=head, index_href="",
                  gates=None, passed=True, rows=rows, pages=pages)
