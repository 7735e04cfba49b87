"""Shared parts of the PID families: column names, derived columns, sWeight checks, PID cut efficiencies.

The PID models are trained on calibration samples (contract ``pid_calib``), one per species, with the
``probe_sWeight`` of an sPlot fit as per-row weight (negative values included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flashsim.errors import ConfigError
from flashsim.models.base import DERIVED_UNITS
from flashsim.validation.cuts import apply_cut, parse_cut

PROBE = "probe_Brunel_"
KINEMATICS = [f"{PROBE}P", f"{PROBE}ETA", "nTracks_Brunel", f"{PROBE}trackcharge"]
RICH = [f"{PROBE}RichDLL{h}" for h in ("e", "mu", "k", "p")]
ISMUON = f"{PROBE}isMuon"
MUON = [f"{PROBE}MuonMuLL", f"{PROBE}MuonBgLL"]
GLOBAL = [f"{PROBE}PID{h}" for h in ("e", "mu", "K", "p")] + [
    f"{PROBE}MC15TuneV1_ProbNN{h}" for h in ("e", "mu", "pi", "k", "p")]
PROBNN = [c for c in GLOBAL if "ProbNN" in c]

# calibration-sample names -> the flash-simulation (signal/tracking contract) names used by the pipelines
CALIB_TO_FLASH: dict[str, str] = {
    **dict(zip(KINEMATICS, ["p", "eta", "nTracks", "charge"], strict=True)),
    **{c: c.replace(PROBE, "").replace("MC15TuneV1_", "") for c in [*RICH, ISMUON, *MUON, *GLOBAL]},
}
FLASH_TO_CALIB = {v: k for k, v in CALIB_TO_FLASH.items()}
DERIVED_UNITS.update({"p": "MeV/c", "eta": "1", "nTracks": "1", "charge": "e"})

# Muon LLs are NaN without isMuon; as conditions they take this value (outside their range, LLs are <= 0)
MUON_FILL = 1.0
MUON_FILLED = [f"{c}_filled" for c in MUON]
DERIVED_UNITS.update({c: "1" for c in MUON_FILLED})


def derive(df, aliases: bool = False):
    """Add ``<muon LL>_filled``: the muon LLs with NaN (no isMuon) replaced by MUON_FILL; with ``aliases`` also
    the flash-simulation names of the calibration columns (``p``, ``RichDLLk``, ...)."""
    if aliases:
        for src, dst in CALIB_TO_FLASH.items():
            if src in df.columns and dst not in df.columns:
                df[dst] = df[src]
    for src, dst in zip(MUON, MUON_FILLED, strict=True):
        if src in df.columns:
            v = df[src].to_numpy(np.float32)
            df[dst] = np.where(np.isfinite(v), v, np.float32(MUON_FILL))
    return df


def short(name: str) -> str:
    """Display name without the probe prefix / tune."""
    return name.replace(PROBE, "").replace("MC15TuneV1_", "")


P_EDGES = [2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 5000.0, 7000.0, 9000.0, 10000.0, 12000.0, 15000.0, 17000.0,
           19000.0, 22000.0, 30000.0, 50000.0, 200000.0]
"""MeV/c, LHCb-like momentum bins that resolve the thresholds of the PID response: the muon-system turn-on
(~3-3.5 GeV/c), the RICH1 (C4F10) Cherenkov thresholds of pi (~2.6), K (~9.3) and p (~17.7 GeV/c) and the RICH2
(CF4) ones of pi (~4.4), K (~15.6) and p (~29.7 GeV/c)."""

EFF_SCHEMA = {
    "p_edges": {"type": ["array", "null"], "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 2,
                "default": P_EDGES, "description": "MeV/c, momentum bins of the PID efficiency curves (increasing); "
                                                   "null: 8 equal-population bins"},
}

SWEIGHT_SCHEMA = {
    "sweights": {"type": "string", "enum": ["regressed", "direct"], "default": "regressed",
                 "description": "regressed: train with E[sWeight | conditions, targets] (non-negative, unbiased); "
                                "direct: the sWeights themselves in the loss"},
}


def training_weights(fam, df, seen: list[np.ndarray]) -> np.ndarray | None:
    """The training weights of a PID family: sWeights checked, then regressed to P(signal | everything the loss
    sees) unless ``sweights: direct`` (see :func:`flashsim.training.signal_probability_weights`)."""
    from flashsim.training import signal_probability_weights

    raw = fam.weights(df)
    if raw is None or fam.cfg.get("sweights", "regressed") == "direct":
        return raw
    x = np.hstack([np.asarray(a, dtype=np.float32).reshape(len(a), -1) for a in seen])
    from flashsim.threads import job_threads

    threads = job_threads(fam.cfg.get("threads", 0))
    return signal_probability_weights(x, raw, seed=fam.spec.seed, threads=threads)


# ---------------------------------------------------------------- cut efficiencies
_OP_WORDS = {">": "gt", "<": "lt", ">=": "ge", "<=": "le", "==": "eq", "!=": "ne"}


def metric_label(cut: str) -> str:
    """A metric-name-safe label of a cut (MLflow keys allow no '>'): ``RichDLLk > 5`` -> ``RichDLLk_gt_5``."""
    col, op, thr = parse_cut(cut)
    return f"{short(col)}_{_OP_WORDS[op]}_{thr:g}"


def generated_columns(fam, df, predict) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray],
                                                 dict[str, np.ndarray]]:
    """``(x, generated, reference columns, generated columns)`` of a generator family on ``df`` (fixed noise)."""
    x = fam.features(df)
    noise = np.random.default_rng(fam.spec.seed + 7).standard_normal((len(x), fam.noise_dim))
    gen = np.asarray(predict(x, noise.astype(np.float32)), dtype=np.float64)
    names = fam.output_names()
    return x, gen, {n: df[n].to_numpy(np.float64) for n in names}, {n: gen[:, j] for j, n in enumerate(names)}


def cut_efficiency_report(fam, ref: dict[str, np.ndarray], gen: dict[str, np.ndarray], p: np.ndarray,
                          w: np.ndarray | None, cuts: list[str], report_dir: Path,
                          n_bins: int = 8) -> tuple[dict[str, float], list[Path]]:
    """Weighted efficiency of each cut in momentum bins, model vs reference: metrics and one plot.

    The bins are the family's ``p_edges`` (threshold-resolving, :data:`P_EDGES`); without them, ``n_bins``
    equal-population bins; sparse configured bins are merged with their neighbours (:func:`merge_sparse_bins`).
    Metrics per cut: the largest absolute difference and pull over the bins, the cut's ``chi2_ndf`` (mean squared
    pull) and the overall efficiencies; over all cuts:
    ``pid_eff.max_abs_diff``, ``pid_eff.max_pull`` and ``pid_eff.chi2_ndf`` (mean squared pull, the errors being
    the sWeighted binomial errors of reference and model added in quadrature).

    ``gen`` values may be probabilities of passing (floats in [0, 1]) under a cut's column name prefixed with
    ``P:`` (e.g. ``P:probe_Brunel_isMuon`` for a classifier), used as the expected efficiency.
    """
    from flashsim import validation as V
    from flashsim.validation.metrics import binned_efficiency
    from flashsim.validation.report import plot_efficiency_curves

    if not cuts:
        return {}, []
    cfg_edges = getattr(fam, "cfg", {}).get("p_edges")
    if cfg_edges:
        edges = np.asarray(cfg_edges, np.float64)
        if len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ConfigError(f"models/{fam.spec.name}/p_edges: must increase, got {list(edges)}")
        edges = merge_sparse_bins(p, edges, w)
    else:
        edges = V.bin_edges(p, n_bins, log=True)
    curves, metrics = [], {}
    for cut in cuts:
        col = parse_cut(cut)[0]
        ref_pass = apply_cut(ref, cut).astype(np.float64)
        gen_pass = gen[f"P:{col}"] if f"P:{col}" in gen else apply_cut(gen, cut).astype(np.float64)
        eff_r, err_r = binned_efficiency(ref_pass, p, edges, w)
        eff_g, err_g = binned_efficiency(gen_pass, p, edges, w)
        label = metric_label(cut)
        diff = np.abs(eff_r - eff_g)
        pull = diff / np.sqrt(err_r**2 + err_g**2 + 1e-12)
        fin = pull[np.isfinite(pull)]
        metrics[f"pid_eff.{label}.max_abs_diff"] = float(np.max(diff[np.isfinite(pull)], initial=0.0))
        metrics[f"pid_eff.{label}.max_pull"] = float(np.max(fin, initial=0.0))
        metrics[f"pid_eff.{label}.chi2_ndf"] = float(np.sum(fin**2) / len(fin)) if len(fin) else float("nan")
        metrics[f"pid_eff.{label}.reference"] = float(np.sum(_w(w, p) * ref_pass) / np.sum(_w(w, p)))
        metrics[f"pid_eff.{label}.model"] = float(np.sum(_w(w, p) * gen_pass) / np.sum(_w(w, p)))
        chi2 = metrics[f"pid_eff.{label}.chi2_ndf"]
        curves.append({"label": f"{short(cut).replace(' ', '')} (chi2/ndf {chi2:.2g})", "reference": (eff_r, err_r),
                       "model": (eff_g, err_g), "pull": pull})
    metrics["pid_eff.max_abs_diff"] = max(v for k, v in metrics.items() if k.endswith(".max_abs_diff"))
    pulls = np.concatenate([c["pull"] for c in curves])
    pulls = pulls[np.isfinite(pulls)]
    metrics["pid_eff.chi2_ndf"] = float(np.sum(pulls**2) / len(pulls)) if len(pulls) else float("nan")
    metrics["pid_eff.max_pull"] = float(np.max(pulls)) if len(pulls) else float("nan")
    plot = plot_efficiency_curves(curves, edges, p, report_dir / "pid_efficiencies.png",
                                    xlabel="p [MeV/c]", title=fam.spec.name)
    return metrics, [plot]


MIN_EFFECTIVE_ENTRIES = 25.0
"""Fewest effective entries ``(sum w)^2 / sum w^2`` of a bin of an efficiency curve: below, the sWeighted error is
itself too uncertain for a pull (the sparse hadron isMuon samples gave |pulls| of ~10 in such bins)."""


def merge_sparse_bins(x: np.ndarray, edges: np.ndarray, w: np.ndarray | None,
                      min_entries: float = MIN_EFFECTIVE_ENTRIES) -> np.ndarray:
    """``edges`` with each bin under ``min_entries`` effective entries merged into the next one (the last such
    bin into the previous one), so threshold-resolving bins stay where the sample fills them."""
    w = _w(w, x)
    idx = np.searchsorted(edges, np.asarray(x, np.float64), side="right") - 1
    nb = len(edges) - 1
    ok = (idx >= 0) & (idx < nb)
    sw = np.bincount(idx[ok], weights=w[ok], minlength=nb)
    sw2 = np.bincount(idx[ok], weights=(w * w)[ok], minlength=nb)
    keep, a, a2 = [edges[0]], 0.0, 0.0
    for k in range(nb):
        a, a2 = a + sw[k], a2 + sw2[k]
        if a2 > 0 and a > 0 and a * a / a2 >= min_entries:
            keep.append(edges[k + 1])
            a, a2 = 0.0, 0.0
    if keep[-1] != edges[-1]:
        if len(keep) > 1:
            keep[-1] = edges[-1]
        else:
            keep.append(edges[-1])
    return np.asarray(keep, np.float64)


def truth_metrics(df, x: np.ndarray, ref: np.ndarray, gen: np.ndarray, seed: int) -> dict[str, float]:
    """Where the reference simulation's truth is present (``is_signal``): the two-sample AUC of the model against
    the pure signal, unweighted (more sensitive than the sWeighted AUC, which real data allows)."""
    from flashsim import validation as V

    if "is_signal" not in df.columns:
        return {}
    s = df["is_signal"].to_numpy() == 1
    if s.sum() < 200:
        return {}
    return {"truth.signal_only_auc": V.two_sample_auc(ref[s], gen[s], conditions=x[s], seed=seed)}


def _w(w: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    return np.ones(len(like)) if w is None else np.asarray(w, dtype=np.float64)

