"""Validation of ECAL set-to-set models against the reference clusters of the same photons.

Metrics (reference vs model, both matched to the photons with the same geometric matching):
cluster multiplicity per event (means, KS of nClusters and of nPhotons - nClusters), unmatched rates (photons
without a cluster, clusters without a photon), matched-cluster residuals (x, y in mm, E / E_photon: KS and
normalised Wasserstein), energy scale and resolution of matched clusters in bins of photon energy, and the
two-sample classifier AUC on cluster features (position, energy, offset from and energy ratio to the matched or
nearest photon, event multiplicities). Arrays behind the plots are saved so that the comparison page can overlay
several models (:mod:`flashsim.validation.ecal_report`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flashsim import validation as V
from flashsim.io import ecal as D
from flashsim.io.atomic import atomic_output

E_EDGES = np.array([0.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0, 64000.0, np.inf])  # MeV
RESIDUALS = ("dx", "dy", "E_ratio")
RESIDUAL_UNITS = ("mm", "mm", "1")
CLUSTER_FEATURES = ("x", "y", "log_E", "dx_cell", "dy_cell", "log_E_ratio", "nPhotons", "nClusters")


def clusters_from_slots(ev: D.Events, y: np.ndarray) -> D.Events:
    """The model's events: same photons, clusters = slots that are on (y [N, 5] per photon)."""
    on = y[:, 0] > 0.5
    n_c = np.bincount(ev.photon_event[on], minlength=len(ev))
    return D.Events(ev.n_photons, ev.photons, n_c, y[on, 1:4].astype(np.float64), ev.geometry)


def summarize(ev: D.Events) -> dict[str, np.ndarray]:
    """Per-event multiplicities, matched residuals and per-cluster features of one set of clusters."""
    slot_cluster, cluster_slot = D.match(ev)
    p, c = ev.photons, ev.clusters
    on = slot_cluster >= 0
    mc = c[slot_cluster[on]]
    resid = np.column_stack([mc[:, 0] - p[on, 0], mc[:, 1] - p[on, 1], mc[:, 2] / p[on, 4]])
    # per-cluster features: relative to the matched photon, else to the nearest photon of the event
    ref_photon = cluster_slot.copy()
    lost = np.flatnonzero(ref_photon < 0)
    if len(lost):
        ci, pj = D.within_event_pairs(ev.n_clusters, ev.n_photons)
        sel = np.isin(ci, lost)
        ci, pj = ci[sel], pj[sel]
        d = np.hypot(c[ci, 0] - p[pj, 0], c[ci, 1] - p[pj, 1])
        order = np.lexsort((d, ci))
        first = np.unique(ci[order], return_index=True)[1]
        ref_photon[ci[order][first]] = pj[order][first]
    has = ref_photon >= 0
    rp = p[np.where(has, ref_photon, 0)]
    cell = ev.geometry.cell_size(rp[:, 0], rp[:, 1])
    ev_c = ev.cluster_event
    feats = np.column_stack([
        c[:, 0], c[:, 1], np.log(np.maximum(c[:, 2], 1e-3)),
        np.where(has, (c[:, 0] - rp[:, 0]) / cell, np.nan), np.where(has, (c[:, 1] - rp[:, 1]) / cell, np.nan),
        np.where(has, np.log(np.maximum(c[:, 2], 1e-3) / rp[:, 4]), np.nan),
        ev.n_photons[ev_c], ev.n_clusters[ev_c]])
    return {"n_photons": ev.n_photons, "n_clusters": ev.n_clusters, "photon_E_matched": p[on, 4],
            "residuals": resid, "photon_unmatched": ~on, "cluster_unmatched": cluster_slot < 0,
            "cluster_features": feats}


def energy_scale(s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median E_cluster / E_photon, its robust width (half 16-84% range) and counts in photon-energy bins."""
    idx = np.searchsorted(E_EDGES, s["photon_E_matched"], side="right") - 1
    r = s["residuals"][:, 2]
    med, width, count = (np.full(len(E_EDGES) - 1, np.nan) for _ in range(3))
    for k in range(len(E_EDGES) - 1):
        v = r[idx == k]
        count[k] = len(v)
        if len(v) >= 20:
            q16, q50, q84 = np.quantile(v, [0.16, 0.5, 0.84])
            med[k], width[k] = q50, 0.5 * (q84 - q16)
    return med, width, count


def metrics(ref: dict[str, np.ndarray], gen: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    m: dict[str, float] = {"events": float(len(ref["n_photons"])), "photons": float(ref["n_photons"].sum())}
    for key, s in (("ref", ref), ("model", gen)):
        m[f"multiplicity.mean_{key}"] = float(s["n_clusters"].mean())
        m[f"unmatched.photon_rate_{key}"] = float(s["photon_unmatched"].mean())
        m[f"unmatched.cluster_rate_{key}"] = float(s["cluster_unmatched"].mean()) if len(
            s["cluster_unmatched"]) else 0.0
    m["multiplicity.mean_rel_diff"] = abs(m["multiplicity.mean_model"] / m["multiplicity.mean_ref"] - 1)
    m["multiplicity.ks"] = V.weighted_ks(ref["n_clusters"], gen["n_clusters"])
    m["multiplicity.lost_ks"] = V.weighted_ks(ref["n_photons"] - ref["n_clusters"],
                                              gen["n_photons"] - gen["n_clusters"])
    m["unmatched.photon_rate_diff"] = abs(m["unmatched.photon_rate_model"] - m["unmatched.photon_rate_ref"])
    res = V.generator_metrics(ref["residuals"], gen["residuals"], [f"residual.{n}" for n in RESIDUALS])
    m.update({k.replace("ks.residual", "residual").replace("wasserstein.residual", "residual_w"): v
              for k, v in res.items() if "." in k})
    m["residual.ks_max"] = res["ks_max"]
    med_r, wid_r, _ = energy_scale(ref)
    med_g, wid_g, _ = energy_scale(gen)
    ok = np.isfinite(med_r) & np.isfinite(med_g)
    m["energy_scale.max_abs_diff"] = float(np.max(np.abs(med_g[ok] - med_r[ok]))) if ok.any() else float("nan")
    m["energy_resolution.max_rel_diff"] = float(np.max(np.abs(wid_g[ok] / wid_r[ok] - 1))) if ok.any() else float(
        "nan")
    m["two_sample_auc"] = V.two_sample_auc(ref["cluster_features"], gen["cluster_features"], seed=seed)
    return m


def save_summary(path: Path, ref: dict[str, np.ndarray], gen: dict[str, np.ndarray]) -> Path:
    arrays = {f"{k}_{n}": v for k, s in (("ref", ref), ("model", gen)) for n, v in s.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_summary(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(path) as z:
        ref = {k[4:]: z[k] for k in z.files if k.startswith("ref_")}
        gen = {k[6:]: z[k] for k in z.files if k.startswith("model_")}
    return ref, gen


# ---------------------------------------------------------------- plots
def plot_multiplicity(ref: dict, models: dict[str, dict], path: Path) -> Path:
    from flashsim.validation.plots import draw_hist, pyplot, save_figure, weighted_hist

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    top = int(max(ref["n_photons"].max(initial=0), 1))
    for ax, key, label in ((axes[0], "n_clusters", "clusters per event"),
                           (axes[1], None, "photons - clusters per event")):
        bins = np.arange(-0.5, top + 1.5) if key else np.arange(-0.5, 16.5)

        def val(s, key=key):
            return s[key] if key else s["n_photons"] - s["n_clusters"]

        draw_hist(ax, *weighted_hist(val(ref), bins, normalise=False), bins, label="reference", reference=True)
        for name, s in models.items():
            draw_hist(ax, *weighted_hist(val(s), bins, normalise=False), bins, label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("events")
        ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_residuals(ref: dict, models: dict[str, dict], path: Path) -> Path:
    from flashsim.validation.plots import axis_label, draw_hist, pyplot, save_figure, weighted_hist

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for j, (ax, name, unit) in enumerate(zip(axes, RESIDUALS, RESIDUAL_UNITS, strict=True)):
        r = ref["residuals"][:, j]
        lo, hi = np.quantile(r, [0.003, 0.997]) if len(r) else (-1.0, 1.0)
        bins = np.linspace(lo, hi, 61)
        draw_hist(ax, *weighted_hist(r, bins), bins, label="reference", reference=True)
        for mname, s in models.items():
            draw_hist(ax, *weighted_hist(s["residuals"][:, j], bins), bins, label=mname)
        ax.set_yscale("log")
        ax.set_xlabel(axis_label(f"matched cluster {name}", unit))
        ax.set_ylabel("fraction of clusters / bin")
    axes[0].legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_energy_scale(ref: dict, models: dict[str, dict], path: Path) -> Path:
    from flashsim.validation.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    lo = np.maximum(E_EDGES[:-1], 250.0)
    hi = np.where(np.isfinite(E_EDGES[1:]), E_EDGES[1:], 2 * E_EDGES[-2])
    centers = np.sqrt(lo * hi) / 1000.0
    for label, s, style in [("reference", ref, "ko"), *[(n, s, "-") for n, s in models.items()]]:
        med, wid, _ = energy_scale(s)
        axes[0].plot(centers, med, style, label=label, ms=4)
        axes[1].plot(centers, wid, style, label=label, ms=4)
    for ax, yl in zip(axes, ("median E_cluster / E_photon", "resolution (half 16-84% width)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("photon energy [GeV]")
        ax.set_ylabel(yl)
    axes[1].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_events(ev: D.Events, gen: D.Events, path: Path, n: int = 4) -> Path:
    """A few events on the ECAL face: photons (size ~ energy), reference and model clusters."""
    from flashsim.validation.plots import pyplot, save_figure

    plt = pyplot()
    busy = np.argsort(-ev.n_photons)[: n * 5 : 5]
    fig, axes = plt.subplots(1, len(busy), figsize=(3.6 * len(busy), 3.6), squeeze=False)
    for ax, e in zip(axes[0], busy, strict=False):
        sl = slice(ev.photon_start[e], ev.photon_start[e] + ev.n_photons[e])
        rc = slice(ev.cluster_start[e], ev.cluster_start[e] + ev.n_clusters[e])
        gc = slice(gen.cluster_start[e], gen.cluster_start[e] + gen.n_clusters[e])
        p = ev.photons[sl]
        ax.scatter(p[:, 0], p[:, 1], s=4 + 20 * np.log10(p[:, 4] / 100), c="0.5", label="photons")
        ax.scatter(ev.clusters[rc, 0], ev.clusters[rc, 1], marker="s", facecolors="none", edgecolors="C0", s=60,
                   label="reference")
        ax.scatter(gen.clusters[gc, 0], gen.clusters[gc, 1], marker="x", c="C1", s=40, label="model")
        ax.set_xlabel("x [mm]")
        ax.set_title(f"event {e}: {ev.n_photons[e]} photons")
    axes[0][0].set_ylabel("y [mm]")
    axes[0][0].legend()
    fig.tight_layout()
    return save_figure(fig, path)


def validate(ev: D.Events, y: np.ndarray, report_dir: Path, name: str, seed: int = 0) -> tuple[dict, list[Path]]:
    """Metrics and plots of model slot outputs ``y`` [N, 5] on events ``ev``; saves the summary arrays."""
    gen_ev = clusters_from_slots(ev, y)
    ref, gen = summarize(ev), summarize(gen_ev)
    m = metrics(ref, gen, seed)
    save_summary(report_dir / "ecal_summary.npz", ref, gen)
    plots = [plot_multiplicity(ref, {name: gen}, report_dir / "multiplicity.png"),
             plot_residuals(ref, {name: gen}, report_dir / "residuals.png"),
             plot_energy_scale(ref, {name: gen}, report_dir / "energy_scale.png"),
             plot_events(ev, gen_ev, report_dir / "events.png")]
    return m, plots
