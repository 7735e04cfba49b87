"""Shared validation: weighted metrics, gates from params, plots and HTML reports (tracking, PID, ECAL reuse it)."""

from flashsim.validation.gates import enforce, evaluate_gates
from flashsim.validation.metrics import (
    baseline_scores,
    bin_edges,
    bin_index,
    brier,
    calibration_chi2,
    generator_metrics,
    log_loss,
    log_loss_gap,
    two_sample_auc,
    weighted_auc,
    weighted_ks,
    weighted_wasserstein,
)
from flashsim.validation.report import (
    collect_figures,
    mlflow_info,
    page_header,
    plot_binned,
    plot_calibration,
    plot_distributions,
    plot_history,
    write_index,
    write_model_page,
)

__all__ = [
    "baseline_scores", "bin_edges", "bin_index", "brier", "calibration_chi2", "collect_figures", "enforce",
    "evaluate_gates", "generator_metrics", "log_loss", "log_loss_gap", "mlflow_info", "page_header", "plot_binned",
    "plot_calibration", "plot_distributions", "plot_history", "two_sample_auc", "weighted_auc", "weighted_ks",
    "weighted_wasserstein", "write_index", "write_model_page",
]
