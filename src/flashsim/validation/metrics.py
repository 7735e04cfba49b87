"""Validation metrics with per-row weights (negative sWeights allowed) for classifiers and generators."""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def _w(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64)


def weighted_auc(score: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> float:
    """ROC AUC = P(score_pos > score_neg) (+ half the ties) with per-row weights (signed weights allowed)."""
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(label).astype(bool)
    w = _w(s, weight)
    uniq, inv = np.unique(s, return_inverse=True)
    wpos = np.bincount(inv, weights=w * y, minlength=len(uniq))
    wneg = np.bincount(inv, weights=w * ~y, minlength=len(uniq))
    below = np.concatenate([[0.0], np.cumsum(wneg)[:-1]])  # negatives with a strictly lower score
    num = np.sum(wpos * (below + 0.5 * wneg))
    den = wpos.sum() * wneg.sum()
    return float(num / den) if den != 0 else float("nan")


def two_sample_auc(reference: np.ndarray, generated: np.ndarray, w_ref: np.ndarray | None = None,
                   w_gen: np.ndarray | None = None, *, conditions: np.ndarray | None = None,
                   seed: int = 0, n_estimators: int = 150, num_leaves: int = 15, learning_rate: float = 0.05,
                   max_rows: int | None = None, n_jobs: int = 1) -> float:
    """Held-out AUC of a GBDT classifier separating ``reference`` rows from ``generated`` rows.

    Both are [N, K] (``conditions`` [N, C], shared by the two when given — it is the same conditions row the
    generator was fed — are appended as features, so the classifier tests the conditional distribution).
    The classifier trains on one half (weights as given, negative allowed) and is scored on the other half with
    the weighted AUC. 0.5 means indistinguishable; 1.0 perfectly separable.
    """
    import lightgbm as lgb

    ref = np.asarray(reference, dtype=np.float32).reshape(len(reference), -1)
    gen = np.asarray(generated, dtype=np.float32).reshape(len(generated), -1)
    if conditions is not None:
        c = np.asarray(conditions, dtype=np.float32).reshape(len(conditions), -1)
        ref, gen = np.hstack([ref, c]), np.hstack([gen, c])
    rng = np.random.default_rng(seed)
    x = np.vstack([ref, gen])
    y = np.r_[np.ones(len(ref)), np.zeros(len(gen))]
    w = np.r_[_w(ref, w_ref), _w(gen, w_gen)]
    if conditions is not None and len(ref) == len(gen):
        # paired rows (same conditions): keep each pair in the same half, or the classifier learns the twin's
        # label from its conditions and the held-out AUC drops below 0.5
        pairs = rng.permutation(len(ref))
        if max_rows is not None and 2 * len(pairs) > max_rows:
            pairs = pairs[: max_rows // 2]
        half = len(pairs) // 2
        tr = np.r_[pairs[:half], pairs[:half] + len(ref)]
        te = np.r_[pairs[half:], pairs[half:] + len(ref)]
    else:
        perm = rng.permutation(len(x))
        if max_rows is not None and len(x) > max_rows:
            perm = perm[:max_rows]
        half = len(perm) // 2
        tr, te = perm[:half], perm[half:]
    clf = lgb.LGBMClassifier(n_estimators=n_estimators, num_leaves=num_leaves, learning_rate=learning_rate,
                             min_child_samples=50, subsample=0.8, subsample_freq=1, colsample_bytree=1.0,
                             random_state=seed, n_jobs=n_jobs, verbose=-1)
    clf.fit(x[tr], y[tr], sample_weight=w[tr])
    return weighted_auc(clf.predict_proba(x[te])[:, 1], y[te], w[te])


def _weighted_ecdfs(a, b, wa, wb):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    wa, wb = _w(a, wa), _w(b, wb)
    ok_a, ok_b = np.isfinite(a), np.isfinite(b)
    a, wa, b, wb = a[ok_a], wa[ok_a], b[ok_b], wb[ok_b]
    grid = np.unique(np.concatenate([a, b]))

    def cdf(v, w):
        order = np.argsort(v)
        cw = np.cumsum(w[order]) / w.sum()
        idx = np.searchsorted(v[order], grid, side="right")
        return np.where(idx > 0, cw[np.maximum(idx - 1, 0)], 0.0)

    return grid, cdf(a, wa), cdf(b, wb)


def weighted_ks(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None, wb: np.ndarray | None = None) -> float:
    """Two-sample Kolmogorov-Smirnov distance between weighted empirical CDFs."""
    _, ca, cb = _weighted_ecdfs(a, b, wa, wb)
    return float(np.max(np.abs(ca - cb))) if len(ca) else float("nan")


def weighted_wasserstein(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None,
                         wb: np.ndarray | None = None, normalise: bool = True) -> float:
    """1-Wasserstein distance (integral of |CDF_a - CDF_b|); divided by the reference's weighted std if asked."""
    grid, ca, cb = _weighted_ecdfs(a, b, wa, wb)
    if len(grid) < 2:
        return 0.0
    d = float(np.sum(np.abs(ca - cb)[:-1] * np.diff(grid)))
    if normalise:
        a = np.asarray(a, dtype=np.float64)
        wa_ = _w(a, wa)
        ok = np.isfinite(a)
        m = np.sum(wa_[ok] * a[ok]) / wa_[ok].sum()
        sd = np.sqrt(max(np.sum(wa_[ok] * (a[ok] - m) ** 2) / wa_[ok].sum(), 0.0))
        d = d / sd if sd > 0 else d
    return d


def _as_probs(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p


def log_loss(probs: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Weighted mean cross entropy; ``probs`` [N] (binary, P(label=1)) or [N, C]."""
    p = _as_probs(probs)
    y = np.asarray(label).astype(int)
    w = _w(y, weight)
    ll = -np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))
    return float(np.sum(w * ll) / np.sum(w))


def class_rates(label: np.ndarray, n_classes: int, weight: np.ndarray | None = None) -> np.ndarray:
    """Weighted class fractions [C] of ``label`` (the constant-rate baseline classifier)."""
    y = np.asarray(label).astype(int)
    w = _w(y, weight)
    rates = np.clip(np.bincount(y, weights=w, minlength=n_classes)[:n_classes] / np.sum(w), 0.0, 1.0)
    return rates / rates.sum()  # signed (s)weights may push a rare class's estimate below 0


def brier(probs: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Weighted Brier score: mean over rows of sum_c (p_c - [y == c])^2 (0 perfect; ``probs`` [N] or [N, C])."""
    p = _as_probs(probs)
    y = np.asarray(label).astype(int)
    w = _w(y, weight)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.sum(w * np.sum((p - onehot) ** 2, axis=1)) / np.sum(w))


def baseline_scores(probs: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """Log-loss and Brier score of ``probs`` and of the constant-rate baseline (the held-out class fractions),
    and the skills ``1 - score / baseline`` (> 0: better than predicting the rates; 1: perfect). Labels only."""
    p = _as_probs(probs)
    rates = class_rates(label, p.shape[1], weight)
    base = np.tile(rates, (len(p), 1))
    out = {"log_loss": log_loss(p, label, weight), "log_loss.baseline": log_loss(base, label, weight),
           "brier": brier(p, label, weight), "brier.baseline": brier(base, label, weight)}
    for k in ("log_loss", "brier"):
        out[f"{k}_skill"] = 1.0 - out[k] / out[f"{k}.baseline"] if out[f"{k}.baseline"] > 0 else float("nan")
    return out


def log_loss_gap(probs: np.ndarray, oracle: np.ndarray, label: np.ndarray,
                 weight: np.ndarray | None = None) -> float:
    """Log-loss of the model minus that of the oracle (the reference simulation's true probabilities); >= ~0."""
    return log_loss(probs, label, weight) - log_loss(oracle, label, weight)


def bin_edges(values: np.ndarray, n_bins: int, weights: np.ndarray | None = None, log: bool = False) -> np.ndarray:
    """Quantile bin edges (equal population), optionally in log space."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & ((v > 0) if log else True)]
    q = np.quantile(np.log(v) if log else v, np.linspace(0, 1, n_bins + 1))
    q = np.unique(q)
    q[0], q[-1] = -np.inf, np.inf
    return np.exp(q) if log else q


def bin_index(p: np.ndarray, eta: np.ndarray, p_edges: np.ndarray, eta_edges: np.ndarray) -> np.ndarray:
    """Flat 2D bin index of each row in the (p, eta) grid (-1 when outside)."""
    ip = np.searchsorted(p_edges, p, side="right") - 1
    ie = np.searchsorted(eta_edges, eta, side="right") - 1
    ok = (ip >= 0) & (ip < len(p_edges) - 1) & (ie >= 0) & (ie < len(eta_edges) - 1)
    return np.where(ok, ip * (len(eta_edges) - 1) + ie, -1)


def calibration_chi2(probs: np.ndarray, label: np.ndarray, bins: np.ndarray, weight: np.ndarray | None = None,
                     min_count: float = 20.0) -> dict:
    """Predicted vs observed efficiency per bin (and class), chi2/ndf with the predicted binomial variance.

    ``probs`` [N] or [N, C]; ``bins`` a flat bin index per row (-1 ignored). For each class c and bin b:
    observed = sum(w [y == c]) / sum(w), predicted = sum(w p_c) / sum(w), variance = sum(w^2 p_c (1 - p_c)) /
    sum(w)^2 (+ the weighted variance of the observed mean with sWeights). Bins with fewer than ``min_count``
    rows are skipped. Returns chi2, ndf, chi2_ndf and per-bin arrays.
    """
    p = _as_probs(probs)
    y = np.asarray(label).astype(int)
    w = _w(y, weight)
    b = np.asarray(bins)
    classes = range(1, p.shape[1]) if p.shape[1] == 2 else range(p.shape[1])
    chi2, ndf, rows = 0.0, 0, []
    nb = int(b.max()) + 1 if len(b) else 0
    count = np.bincount(b[b >= 0], minlength=nb)
    for c in classes:
        for k in range(nb):
            if count[k] < min_count:
                continue
            m = b == k
            sw = w[m].sum()
            if sw <= 0:
                continue
            obs = np.sum(w[m] * (y[m] == c)) / sw
            pred = np.sum(w[m] * p[m, c]) / sw
            var = np.sum(w[m] ** 2 * p[m, c] * (1 - p[m, c])) / sw**2
            var = max(var, np.sum(w[m] ** 2) / sw**2 * 1e-4)  # a floor: a certain prediction still has stat noise
            if weight is not None:  # the observed weighted mean's own variance (sWeights: background rows add to it)
                var = max(var, np.sum(w[m] ** 2 * ((y[m] == c) - obs) ** 2) / sw**2)
            chi2 += (obs - pred) ** 2 / var
            ndf += 1
            rows.append({"class": int(c), "bin": int(k), "observed": float(obs), "predicted": float(pred),
                         "sigma": float(np.sqrt(var)), "n": int(count[k])})
    return {"chi2": float(chi2), "ndf": ndf, "chi2_ndf": float(chi2 / ndf) if ndf else float("nan"), "bins": rows}


def generator_metrics(reference: np.ndarray, generated: np.ndarray, names: list[str],
                      w_ref: np.ndarray | None = None, w_gen: np.ndarray | None = None) -> dict[str, float]:
    """Per-variable KS and normalised Wasserstein (``ks.<name>``, ``wasserstein.<name>``) and their maxima."""
    out: dict[str, float] = {}
    ref = np.asarray(reference).reshape(len(reference), -1)
    gen = np.asarray(generated).reshape(len(generated), -1)
    for j, n in enumerate(names):
        out[f"ks.{n}"] = weighted_ks(ref[:, j], gen[:, j], w_ref, w_gen)
        out[f"wasserstein.{n}"] = weighted_wasserstein(ref[:, j], gen[:, j], w_ref, w_gen)
    out["ks_max"] = max(out[f"ks.{n}"] for n in names)
    out["wasserstein_max"] = max(out[f"wasserstein.{n}"] for n in names)
    return out


def binned_efficiency(passed: np.ndarray, x: np.ndarray, edges: np.ndarray,
                      weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted efficiency ``sum(w pass) / sum(w)`` per bin of ``x`` and its error (signed weights allowed).

    ``passed`` is a pass flag or a probability of passing (a classifier's expectation). The error is
    ``sqrt(sum(w^2 (pass - eff)^2)) / sum(w)``, the usual sWeighted-efficiency variance. Bins with no positive
    weight give NaN.
    """
    e = np.asarray(passed, dtype=np.float64)
    w = _w(e, weight)
    idx = np.searchsorted(edges, np.asarray(x, dtype=np.float64), side="right") - 1
    nb = len(edges) - 1
    ok = (idx >= 0) & (idx < nb)
    sw = np.bincount(idx[ok], weights=w[ok], minlength=nb)
    swp = np.bincount(idx[ok], weights=(w * e)[ok], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = np.where(sw > 0, swp / np.where(sw > 0, sw, 1.0), np.nan)
        resid = (e - eff[np.clip(idx, 0, nb - 1)]) ** 2
        var = np.bincount(idx[ok], weights=(w**2 * resid)[ok], minlength=nb)
        err = np.where(sw > 0, np.sqrt(var) / np.where(sw > 0, sw, 1.0), np.nan)
    return eff, err
