"""Plots of the validation reports: weighted histograms (``hist``, sum of w² errors) drawn with ``mplhep``.

Every figure is written as PNG (150 dpi, for the HTML pages) with a PDF copy next to it (for papers and talks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 150


def pyplot():
    """matplotlib.pyplot, headless, in the reports' style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    hep.style.use("LHCb2")
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 9,
                         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.figsize": (6, 4.5),
                         "axes.grid": False, "savefig.dpi": DPI, "axes.linewidth": 1.0,
                         "xtick.major.size": 5, "ytick.major.size": 5, "xtick.minor.size": 2.5,
                         "ytick.minor.size": 2.5, "xtick.major.width": 0.8, "ytick.major.width": 0.8,
                         "xtick.minor.width": 0.6, "ytick.minor.width": 0.6, "lines.linewidth": 1.3,
                         "errorbar.capsize": 0})
    return plt


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as PNG (``DPI``) to ``path`` and as PDF next to it, atomically; close it; return the PNG."""
    import matplotlib.pyplot as plt

    from flashsim.io.atomic import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    with atomic_output(path.with_suffix(".pdf")) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight")
    plt.close(fig)
    return path


def axis_label(name: str, unit: str | None) -> str:
    """``name [unit]``; dimensionless (``1``) or unknown units add nothing."""
    return f"{name} [{unit}]" if unit and unit != "1" else name


# ---------------------------------------------------------------- weighted histograms
def weighted_hist(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None,
                  normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Bin contents and their variances (sum of w²) of ``values`` in ``edges`` (non-finite values dropped).

    ``normalise``: divided by the total weight of the finite values, so the contents are fractions of entries
    (entries outside the edges count in the total: a model that puts mass in the tails shows it).
    """
    import hist

    v = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    ok = np.isfinite(v) & np.isfinite(w)
    h = hist.Hist(hist.axis.Variable(np.asarray(edges, dtype=np.float64)), storage=hist.storage.Weight())
    h.fill(v[ok], weight=w[ok])
    counts, variances = h.values(), h.variances()
    if normalise:
        total = float(w[ok].sum())
        if total > 0:
            counts, variances = counts / total, variances / total**2
    return counts, variances


def draw_hist(ax, counts: np.ndarray, variances: np.ndarray, edges: np.ndarray, *, label: str,
              reference: bool = False, color=None) -> None:
    """A histogram with sqrt(sum w²) error bars: the reference filled, a model as a line."""
    import mplhep as hep

    err = np.sqrt(np.maximum(variances, 0))
    if reference:
        hep.histplot(counts, edges, ax=ax, histtype="fill", alpha=0.3, color=color or "0.45", label=label,
                     flow=None)
        hep.histplot(counts, edges, ax=ax, yerr=err, histtype="errorbar", color=color or "0.25", markersize=2.5,
                     flow=None)
    else:
        hep.histplot(counts, edges, ax=ax, yerr=err, histtype="step", lw=1.2, label=label, color=color, flow=None)


def ratio(num: np.ndarray, num_var: np.ndarray, den: np.ndarray, den_var: np.ndarray) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """``num / den`` and its error from both variances (uncorrelated); NaN where ``den`` is empty."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, num / den, np.nan)
        err = np.where(den > 0, np.sqrt(np.maximum(num_var, 0) / den**2 + num**2 * np.maximum(den_var, 0) / den**4),
                       np.nan)
    return r, err


def wants_log_y(counts: np.ndarray, threshold: float = 100.0) -> bool:
    """Log y when the non-empty bins span more than ``threshold`` (tails would be invisible on a linear axis)."""
    pos = counts[counts > 0]
    return bool(len(pos) > 1 and pos.max() / pos.min() > threshold)


def reference_edges(values: np.ndarray, bins: int = 40,
                    quantiles: tuple[float, float] = (0.005, 0.995)) -> np.ndarray:
    """``bins`` equal bins over the ``quantiles`` range of the finite ``values``; a unit range for constants."""
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    lo, hi = (np.quantile(fin, quantiles) if len(fin) else (0.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def plot_distributions(reference: np.ndarray, generated: np.ndarray, names: list[str], path: str | Path,
                       units: list[str] | None = None, w_ref: np.ndarray | None = None,
                       w_gen: np.ndarray | None = None, title: str = "", log_y: bool | str = "auto",
                       labels: tuple[str, str] = ("reference", "model")) -> Path:
    """Reference vs generated weighted histograms, one panel per variable with a model/reference ratio below.

    Bins: 40 over the 0.5-99.5% range of the reference; contents are fractions of the (weighted) entries with
    sqrt(sum w²) errors. ``log_y``: True, False or ``"auto"`` (log where the reference spans > 2 decades).
    """
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    ref = np.asarray(reference).reshape(len(reference), -1)
    gen = np.asarray(generated).reshape(len(generated), -1)
    k = ref.shape[1]
    ncol = min(k, 4)
    nrow = (k + ncol - 1) // ncol
    fig = plt.figure(figsize=(3.9 * ncol, 4.0 * nrow + (0.4 if title else 0)), layout="constrained")
    grid = fig.add_gridspec(nrow, ncol)
    for j in range(k):
        cell = grid[divmod(j, ncol)].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.0)
        ax = fig.add_subplot(cell[0])
        rax = fig.add_subplot(cell[1], sharex=ax)
        edges = reference_edges(ref[:, j])
        cr, vr = weighted_hist(ref[:, j], edges, w_ref)
        cg, vg = weighted_hist(gen[:, j], edges, w_gen)
        draw_hist(ax, cr, vr, edges, label=labels[0], reference=True)
        draw_hist(ax, cg, vg, edges, label=labels[1], color="C1")
        if log_y is True or (log_y == "auto" and wants_log_y(cr)):
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_ylabel("fraction / bin")
        ax.tick_params(labelbottom=False)
        ax.set_xlabel("")
        r, re = ratio(cg, vg, cr, vr)
        centres = 0.5 * (edges[1:] + edges[:-1])
        rax.errorbar(centres, r, yerr=re, fmt="o", ms=2.5, color="C1", elinewidth=0.8)
        rax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        rax.set_ylim(0.5, 1.5)
        rax.set_ylabel(f"{labels[1]}/ref.", fontsize=8)
        rax.xaxis.set_major_locator(MaxNLocator(5))
        rax.ticklabel_format(axis="x", style="plain", useOffset=False)  # an offset text would cover the label
        rax.set_xlabel(axis_label(names[j], units[j] if units else None))
        if j == 0:
            ax.legend(loc="best")
    if title:
        fig.suptitle(title)
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
    ax.set_xlabel("predicted efficiency (per p, eta bin)")
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
    """Training curves from the epoch-loop history (log y when a curve spans more than a decade)."""
    plt = pyplot()
    fig, ax = plt.subplots()
    keys = keys or [k for k in (history[0] if history else {}) if k not in ("epoch", "epoch_seconds")]
    values = []
    for k in keys:
        ys = np.array([h.get(k, np.nan) for h in history], dtype=float)
        values.append(ys)
        ax.plot([h["epoch"] for h in history], ys, label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss" if all(k.endswith("loss") for k in keys) else "value")
    allv = np.concatenate(values) if values else np.array([])
    if wants_log_y(allv[np.isfinite(allv)], 10.0):
        ax.set_yscale("log")
    if keys:
        ax.legend()
    return save_figure(fig, Path(path))


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
