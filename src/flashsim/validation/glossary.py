"""One line per validation metric, shown under the gate table of every report page."""

from __future__ import annotations

# exact metric names first, then the rules by suffix (new metrics of the same kind are explained without edits)
METRICS: dict[str, str] = {
    "log_loss": "weighted cross-entropy of the predicted class probabilities on the test split (lower is better)",
    "logloss_gap": "log-loss of the model minus that of the true probabilities (oracle): 0 is perfect",
    "auc": "ROC area under the curve of the classifier (one-vs-rest mean for several classes)",
    "auc_gap": "ROC AUC of the true probabilities (oracle) minus the model's: 0 is perfect",
    "calibration.chi2_ndf": "chi2/ndf of observed vs predicted class fractions in (p, eta) bins: ~1 if calibrated",
    "two_sample_auc": "AUC of a classifier separating model from reference rows: 0.5 = indistinguishable",
    "binned.two_sample_auc_max": "worst two-sample AUC over p and eta bins: 0.5 = indistinguishable everywhere",
    "ks_max": "largest Kolmogorov-Smirnov distance over the output variables: 0 = identical distributions",
    "binned.ks_max": "largest KS distance over variables and p, eta bins",
    "residual.ks_max": "largest KS distance of matched-cluster residuals (dx, dy, E ratio)",
    "multiplicity.mean_rel_diff": "relative difference of the mean number of clusters per event",
    "unmatched.photon_rate_diff": "difference of the fraction of photons without a cluster (model - reference)",
    "energy_scale.max_abs_diff": "largest difference of the median E_cluster / E_photon over photon-energy bins",
    "masses.auc": "two-sample AUC on the Lc+ and visible Lb0 masses: 0.5 = indistinguishable",
    "ip_ipchi2.auc": "two-sample AUC on the impact parameters and their chi2: 0.5 = indistinguishable",
    "pid.chi2_ndf_mean": "mean chi2/ndf of PID-cut efficiencies vs p, flash vs reference",
    "pid_eff.chi2_ndf": "mean squared pull of the PID-cut efficiencies vs p, model vs reference",
    "muon_nan_convention_violations": "rows breaking the muon convention (LLs NaN when isMuon == 0): must be 0",
    "validate_seconds": "time the validation took [s]",
    "teacher.two_sample_auc": "two-sample AUC of the ode_steps flow (teacher) the few-step model was distilled "
                              "from, same rows and noise",
    "teacher.ks_max": "largest KS distance of the ode_steps flow (teacher), same rows and noise",
    "few_step_auc_delta": "two-sample AUC of the few-step model minus its teacher's: <= 0.01 keeps the quality",
    "few_step_ks_delta": "largest KS distance of the few-step model minus its teacher's",
}
SUFFIXES: list[tuple[str, str]] = [
    ("chi2_ndf", "chi2 per degree of freedom, model vs reference: ~1 when they agree within errors"),
    ("auc", "area under the ROC curve (two-sample: 0.5 = indistinguishable)"),
    ("ks", "Kolmogorov-Smirnov distance: 0 = identical distributions"),
    ("ks_max", "largest Kolmogorov-Smirnov distance: 0 = identical distributions"),
    ("wasserstein", "normalised Wasserstein distance: 0 = identical distributions"),
    ("max_abs_diff", "largest absolute difference, model vs reference"),
    ("max_rel_diff", "largest relative difference, model vs reference"),
    ("rel_diff", "relative difference, model vs reference"),
    ("rate_diff", "difference of rates, model vs reference"),
    ("gap", "model minus the best attainable (oracle): 0 is perfect"),
    ("violations", "number of rows breaking a convention: must be 0"),
]


def explain(metric: str) -> str:
    """The one-line meaning of ``metric`` (exact name, else by its last dotted part or suffix; '' if unknown)."""
    if metric in METRICS:
        return METRICS[metric]
    last = metric.rsplit(".", 1)[-1]
    if last in METRICS:
        return METRICS[last]
    for suffix, text in sorted(SUFFIXES, key=lambda s: -len(s[0])):
        if last.endswith(suffix):
            return text
    return ""
