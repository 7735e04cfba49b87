"""Default validation of classifiers and conditional generators (metrics + plots), used by every family."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flashsim import validation as V


def _pe(fam, df) -> tuple[np.ndarray, np.ndarray]:
    b = fam.cfg["bins"]
    for key in ("p", "eta"):
        if b[key] not in df.columns:
            from flashsim.errors import InputError

            raise InputError(f"{fam.spec.name}: binning column for {key} missing (set models.{fam.spec.name}."
                             f"bins.{key})", branch=b[key])
    return df[b["p"]].to_numpy(np.float64), df[b["eta"]].to_numpy(np.float64)


CLASSIFIER_METRICS = ("rows", "log_loss", "log_loss.baseline", "log_loss_skill", "brier", "brier.baseline",
                      "brier_skill", "auc", "calibration.chi2_ndf", "calibration.ndf", "calibration.max_abs_diff")
"""What :func:`classifier` computes from held-out labels alone: the default gates use only these."""

def classifier(fam, df, predict, report_dir: Path) -> tuple[dict, list[Path]]:
    """From held-out labels: log-loss and Brier score with their constant-rate baselines and skills, ROC AUC,
    calibration chi2/ndf in (p, eta) bins; with an oracle also the gaps to the true probabilities; plots."""
    x = fam.features(df)
    y = fam.labels(df)
    w = fam.weights(df)
    probs = np.asarray(predict(x, None), dtype=np.float64)
    n_cls = probs.shape[1]
    p, eta = _pe(fam, df)
    b = fam.cfg["bins"]
    pe, ee = V.bin_edges(p, b["n_p"], log=True), V.bin_edges(eta, b["n_eta"])
    bins = V.bin_index(p, eta, pe, ee)
    m: dict[str, float] = {"rows": len(df), **V.baseline_scores(probs, y, w)}
    if n_cls == 2:
        m["auc"] = V.weighted_auc(probs[:, 1], y == 1, w)
    else:
        m["auc"] = float(np.nanmean([V.weighted_auc(probs[:, c], y == c, w) for c in range(n_cls)]))
    cal = V.calibration_chi2(probs, y, bins, w)
    m["calibration.chi2_ndf"], m["calibration.ndf"] = cal["chi2_ndf"], cal["ndf"]
    m["calibration.max_abs_diff"] = max((abs(r["observed"] - r["predicted"]) for r in cal["bins"]), default=np.nan)
    oracle = fam.oracle(df)
    if oracle is not None:
        m["oracle.log_loss"] = V.log_loss(oracle, y, w)
        m["logloss_gap"] = m["log_loss"] - m["oracle.log_loss"]
        m["oracle.calibration.chi2_ndf"] = V.calibration_chi2(oracle, y, bins, w)["chi2_ndf"]
    plots = [V.plot_calibration(cal["bins"], report_dir / "calibration.png", fam.class_names)]
    plots.append(_efficiency_vs(fam, probs, y, w, oracle, p, pe, "p", report_dir / "efficiency_vs_p.png"))
    plots.append(_efficiency_vs(fam, probs, y, w, oracle, eta, ee, "eta", report_dir / "efficiency_vs_eta.png"))
    return m, plots


def _efficiency_vs(fam, probs, y, w, oracle, v, edges, label, path):
    """Reference, model (and oracle, dotted) class fractions vs ``label``."""
    from flashsim.validation.report import pyplot, save_figure

    plt = pyplot()
    w = np.ones(len(y)) if w is None else w
    lo, hi = np.quantile(v, [0.01, 0.99])
    e = np.geomspace(max(lo, 1e-9), hi, 16) if label == "p" and lo > 0 else np.linspace(lo, hi, 16)
    idx = np.clip(np.searchsorted(e, v) - 1, 0, len(e) - 2)
    centers = 0.5 * (e[1:] + e[:-1])
    fig, ax = plt.subplots()
    classes = range(1, probs.shape[1]) if probs.shape[1] == 2 else range(probs.shape[1])
    for c in classes:
        sw = np.bincount(idx, weights=w, minlength=len(centers))
        sw = np.where(sw == 0, np.nan, sw)
        obs = np.bincount(idx, weights=w * (y == c), minlength=len(centers)) / sw
        pred = np.bincount(idx, weights=w * probs[:, c], minlength=len(centers)) / sw
        line = ax.plot(centers, obs, "o", ms=3, label=f"{fam.class_names[c]} reference")[0]
        ax.plot(centers, pred, "-", color=line.get_color(), label=f"{fam.class_names[c]} model")
        if oracle is not None:
            orc = np.bincount(idx, weights=w * oracle[:, c], minlength=len(centers)) / sw
            ax.plot(centers, orc, ":", color=line.get_color())
    if label == "p":
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("fraction")
    ax.legend(ncol=2)
    return save_figure(fig, Path(path))


def generator(fam, df, predict, report_dir: Path, seed: int | None = None,
              teacher=None) -> tuple[dict, list[Path]]:
    """Two-sample AUC (held out), per-variable KS and Wasserstein, the same in p and eta bins; plots.

    ``teacher(x, noise)``: the model a few-step generator was distilled from, run on the same rows and noise:
    adds ``teacher.two_sample_auc``, ``teacher.ks_max`` and the ``few_step_*_delta`` (model minus teacher);
    ``teacher is predict`` (the model is its own teacher) gives deltas of 0 without running it again."""
    x = fam.features(df)
    ref = fam.targets(df)
    w = fam.weights(df)
    seed = fam.spec.seed if seed is None else seed
    noise = np.random.default_rng(seed + 7).standard_normal((len(x), fam.noise_dim)).astype(np.float32)
    gen = np.asarray(predict(x, noise), dtype=np.float64)
    names = fam.output_names()
    m: dict[str, float] = {"rows": len(df)}
    m["two_sample_auc"] = V.two_sample_auc(ref, gen, w, w, conditions=x, seed=seed)
    m.update(V.generator_metrics(ref, gen, names, w, w))
    p, eta = _pe(fam, df)
    b = fam.cfg["bins"]
    worst_auc, worst_ks = 0.0, 0.0
    for var, n, log in ((p, b["n_p"], True), (eta, b["n_eta"], False)):
        edges = V.bin_edges(var, n, log=log)
        idx = np.searchsorted(edges, var, side="right") - 1
        for k in range(len(edges) - 1):
            sel = idx == k
            if sel.sum() < 200:
                continue
            ws = None if w is None else w[sel]
            worst_auc = max(worst_auc, V.two_sample_auc(ref[sel], gen[sel], ws, ws, conditions=x[sel], seed=seed,
                                                        n_estimators=50))
            gm = V.generator_metrics(ref[sel], gen[sel], names, ws, ws)
            worst_ks = max(worst_ks, gm["ks_max"])
    m["binned.two_sample_auc_max"] = worst_auc
    m["binned.ks_max"] = worst_ks
    if teacher is predict:
        m["teacher.two_sample_auc"], m["teacher.ks_max"] = m["two_sample_auc"], m["ks_max"]
    elif teacher is not None:  # the ode_steps teacher on the same rows and noise: what the few-step model costs
        t = np.asarray(teacher(x, noise), dtype=np.float64)
        m["teacher.two_sample_auc"] = V.two_sample_auc(ref, t, w, w, conditions=x, seed=seed)
        m["teacher.ks_max"] = V.generator_metrics(ref, t, names, w, w)["ks_max"]
    if teacher is not None:
        m["few_step_auc_delta"] = m["two_sample_auc"] - m["teacher.two_sample_auc"]
        m["few_step_ks_delta"] = m["ks_max"] - m["teacher.ks_max"]
    pr, pg, pn, pu = fam.plot_variables(ref, gen)  # e.g. a covariance as log sigmas and correlations
    plots = [V.plot_distributions(pr, pg, pn, report_dir / "distributions.png", pu, w, w, title=fam.spec.name)]
    return m, plots
