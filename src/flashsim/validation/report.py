"""Plots (mplhep style) and HTML reports: one page per model and ``reports/index.html`` listing them all."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from flashsim.io.atomic import atomic_output, write_text


def pyplot():
    """matplotlib.pyplot, headless, in the reports' style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    hep.style.use("LHCb2")
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 9,
                         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.figsize": (6, 4.5)})
    return plt


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_distributions(reference: np.ndarray, generated: np.ndarray, names: list[str], path: str | Path,
                       units: list[str] | None = None, w_ref: np.ndarray | None = None,
                       w_gen: np.ndarray | None = None, title: str = "") -> Path:
    """Reference vs generated histograms, one panel per variable (1-99.5% range of the reference)."""
    plt = pyplot()
    ref = np.asarray(reference).reshape(len(reference), -1)
    gen = np.asarray(generated).reshape(len(generated), -1)
    k = ref.shape[1]
    ncol = min(k, 4)
    nrow = (k + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    for j in range(k):
        ax = axes[j // ncol][j % ncol]
        r, g = ref[:, j], gen[:, j]
        fin = r[np.isfinite(r)]
        lo, hi = (np.quantile(fin, [0.005, 0.995]) if len(fin) else (0.0, 1.0))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        ax.hist(r, bins=bins, weights=w_ref, density=True, histtype="stepfilled", alpha=0.35, label="reference")
        ax.hist(g, bins=bins, weights=w_gen, density=True, histtype="step", lw=1.5, label="model")
        unit = f" [{units[j]}]" if units and units[j] not in ("", "1") else ""
        ax.set_xlabel(f"{names[j]}{unit}")
        if j == 0:
            ax.legend()
    for j in range(k, nrow * ncol):
        axes[j // ncol][j % ncol].set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def plot_calibration(rows: list[dict], path: str | Path, class_names: list[str] | None = None) -> Path:
    """Observed vs predicted efficiency per (p, eta) bin and class, with the diagonal."""
    plt = pyplot()
    fig, ax = plt.subplots()
    for c in sorted({r["class"] for r in rows}):
        rr = [r for r in rows if r["class"] == c]
        label = class_names[c] if class_names and c < len(class_names) else f"class {c}"
        ax.errorbar([r["predicted"] for r in rr], [r["observed"] for r in rr], yerr=[r["sigma"] for r in rr],
                    fmt="o", ms=3, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("predicted efficiency")
    ax.set_ylabel("observed efficiency")
    ax.legend()
    return save_figure(fig, Path(path))


def plot_binned(values: dict[str, np.ndarray], p_edges: np.ndarray, eta_edges: np.ndarray, path: str | Path,
                label: str) -> Path:
    """A metric in (p, eta) bins as a heat map (``values[name]`` shaped [n_p, n_eta]); first entry plotted."""
    plt = pyplot()
    name, grid = next(iter(values.items()))
    fig, ax = plt.subplots()
    im = ax.imshow(np.asarray(grid, dtype=float).T, origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_xlabel("p bin (quantiles)")
    ax.set_ylabel("eta bin (quantiles)")
    ax.set_title(name)
    return save_figure(fig, Path(path))


def plot_history(history: list[dict], path: str | Path, keys: list[str] | None = None) -> Path:
    """Training curves from the epoch-loop history."""
    plt = pyplot()
    fig, ax = plt.subplots()
    keys = keys or [k for k in (history[0] if history else {}) if k not in ("epoch", "epoch_seconds")]
    for k in keys:
        ax.plot([h["epoch"] for h in history], [h.get(k, np.nan) for h in history], label=k)
    ax.set_xlabel("epoch")
    ax.legend()
    return save_figure(fig, Path(path))


# the style of every HTML report page
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        ".pass{color:#080;font-weight:bold}.fail{color:#b00;font-weight:bold}img{max-width:100%;margin:4px 0}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_model_page(report_dir: str | Path, name: str, metrics: dict, gates: list[dict], plots: list[Path],
                     card: dict | None = None) -> Path:
    """``reports/<name>/index.html``: gates, metrics, plots, model card summary."""
    report_dir = Path(report_dir)
    ok = all(g["passed"] for g in gates)
    lines = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<p><a href='../index.html'>all models</a></p><h1>{html.escape(name)}</h1>",
             f"<p>gates: <span class='{'pass' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}</span></p>",
             "<h2>Gates</h2><table><tr><th>metric</th><th>value</th><th>min</th><th>max</th><th></th></tr>"]
    for g in gates:
        lines.append(f"<tr><td>{html.escape(g['metric'])}</td><td>{_fmt(g['value'])}</td>"
                     f"<td>{_fmt(g.get('min', ''))}</td><td>{_fmt(g.get('max', ''))}</td>"
                     f"<td class='{'pass' if g['passed'] else 'fail'}'>{'pass' if g['passed'] else 'FAIL'}</td></tr>")
    lines.append("</table><h2>Metrics</h2><table>")
    for k, v in sorted(metrics.items()):
        if isinstance(v, (int, float, str)):
            lines.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>")
    lines.append("</table><h2>Plots</h2>")
    for p in plots:
        rel = Path(p).name
        lines.append(f"<div><img src='{html.escape(rel)}' alt='{html.escape(rel)}'></div>")
    if card:
        lines.append("<h2>Model card</h2><pre>" + html.escape(json.dumps(
            {k: card.get(k) for k in ("inputs", "outputs", "training_data", "parity") if k in card}, indent=1))
            + "</pre>")
    lines.append("</body></html>")
    path = report_dir / "index.html"
    write_text(path, "\n".join(lines))
    return path


def write_index(reports_root: str | Path) -> Path:
    """``reports/index.html`` listing every ``reports/*/metrics.json`` with its gate status."""
    root = Path(reports_root)
    rows = []
    for mj in sorted(root.glob("*/metrics.json")):
        try:
            data = json.loads(mj.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        gates = data.get("gates", [])
        ok = all(g.get("passed") for g in gates)
        key = ", ".join(f"{g['metric']}={_fmt(g['value'])}" for g in gates[:4])
        rows.append(f"<tr><td><a href='{html.escape(mj.parent.name)}/index.html'>{html.escape(mj.parent.name)}</a>"
                    f"</td><td>{html.escape(str(data.get('family', '')))}</td>"
                    f"<td class='{'pass' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}</td><td>{key}</td></tr>")
    # other pages (e.g. comparisons of several models): report folders with an index.html but no metrics.json
    pages = [d.name for d in sorted(root.iterdir()) if d.is_dir() and (d / "index.html").exists()
             and not (d / "metrics.json").exists()] if root.is_dir() else []
    links = "".join(f"<li><a href='{html.escape(n)}/index.html'>{html.escape(n)}</a></li>" for n in pages)
    others = f"<h2>Other pages</h2><ul>{links}</ul>" if pages else ""
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>flashsim models</title><style>{CSS}</style>"
            "</head><body><h1>flashsim models</h1><table><tr><th>model</th><th>family</th><th>gates</th>"
            "<th>gated metrics</th></tr>" + "\n".join(rows) + "</table>" + others + "</body></html>")
    path = root / "index.html"
    write_text(path, text)
    return path


def plot_efficiency_curves(curves: list[dict], edges: np.ndarray, x: np.ndarray, path: str | Path,
                           xlabel: str = "", title: str = "", log_x: bool = True) -> Path:
    """Efficiency vs a binned variable, reference (points) vs model (line), one colour per curve.

    ``curves``: ``{"label", "reference": (eff, err), "model": (eff, err)}``; bins are placed at the median of
    ``x`` inside each bin (the outer edges may be infinite).
    """
    plt = pyplot()
    x = np.asarray(x, dtype=np.float64)
    idx = np.searchsorted(edges, x, side="right") - 1
    centers = np.array([np.median(x[idx == k]) if np.any(idx == k) else np.nan for k in range(len(edges) - 1)])
    fig, ax = plt.subplots()
    for c in curves:
        (er, sr), (eg, sg) = c["reference"], c["model"]
        line = ax.errorbar(centers, er, yerr=sr, fmt="o", ms=4, label=f"{c['label']} reference")[0]
        ax.fill_between(centers, eg - sg, eg + sg, color=line.get_color(), alpha=0.25, lw=0)
        ax.plot(centers, eg, "-", color=line.get_color(), label=f"{c['label']} model")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("efficiency")
    ax.set_ylim(-0.02, 1.05)
    if title:
        ax.set_title(title)
    ax.legend(ncol=2, fontsize=7)
    return save_figure(fig, Path(path))
