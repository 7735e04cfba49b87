"""Generic model drivers behind ``flashsim train|export|validate NAME`` (families do the model-specific part)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from flashsim.config import load_params
from flashsim.errors import GateError, InputError
from flashsim.io.atomic import atomic_outputs, folder_lock, write_json
from flashsim.mlops import model_registry, runs
from flashsim.models import get_family, get_spec
from flashsim.models.schemas import check_config

log = logging.getLogger(__name__)


def add_model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="model name (a key of params.yaml models:, species expanded)")
    p.add_argument("--params", default=None, help="params file (default: params.yaml of the repository)")


def family_for(args: argparse.Namespace):
    params = load_params(args.params) if args.params else load_params()
    check_config(params)  # every model, as the Snakefile does: the same one-line message for the same error
    fam = get_family(get_spec(args.name, params))
    fam.config = params  # the effective configuration (recorded for provenance by the MLflow run)
    return fam


def train_model(fam) -> dict:
    """Train, write ``results/train/<name>/trained.json`` (the rule's output) last."""
    spec = fam.spec
    t0 = time.perf_counter()
    # one trainer per output folder (a second one refuses at once); local record in train_dir + the MLflow run
    with folder_lock(spec.train_dir, f"`flashsim train {spec.name}`"), runs.start_model_job(fam, "train") as run:
        run.set_tags({"model": spec.name, "family": spec.family, "sample": spec.sample, "scale": spec.scale})
        run.log_params({"model": spec.cfg, "seed": spec.seed})
        summary = fam.fit(run)
        summary.update(getattr(fam, "summary_extra", dict)())
        summary["train_seconds"] = time.perf_counter() - t0
        summary["family"] = spec.family
        write_json(spec.train_dir / "trained.json", summary)
        run.log_metrics({"train_seconds": summary["train_seconds"]})
        device = str(summary.get("device") or "cpu")
        run.set_tags({"device": device, "train.device": device})
    log.info("%s trained in %.1f s", spec.name, summary["train_seconds"])
    return summary


def export_model(fam) -> dict:
    """ONNX + parity check (held-out rows + family extra rows) + model card, written together atomically."""
    from flashsim.export import model_card

    spec = fam.spec
    fam.load()
    with atomic_outputs([spec.onnx_path, spec.card_path]) as (tmp_onnx, tmp_card):
        fam.to_onnx(tmp_onnx)
        parity = fam.parity(tmp_onnx)
        summary = fam.training_summary()
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        card = model_card(spec.name, family=spec.family, inputs=fam.io_inputs(), outputs=fam.io_outputs(),
                          onnx_path=tmp_onnx, training_files=fam.training_files(),
                          params={"model": spec.cfg, "seed": spec.seed, "scale": spec.scale}, metrics=metrics,
                          parity=parity, noise_dim=fam.noise_dim,
                          extra={"task": fam.task, "onnx": str(spec.onnx_path.relative_to(spec.root))})
        write_json(tmp_card, card)
    with runs.start_model_job(fam, "export") as run:
        run.log_metrics({"export.parity_max_abs_deviation": parity["max_abs_deviation"]})
        # MLflow: ONNX + card as run artifacts, a new registered version with alias `candidate`
        model_registry.register_export(run, spec.name, spec.onnx_path, spec.card_path, example=onnx_example(fam))
    log.info("%s exported: parity max |dev| %.3g on %d rows", spec.name, parity["max_abs_deviation"],
             parity["rows"])
    return card


def onnx_example(fam, rows: int = 5) -> dict | None:
    """Input example of the MLflow model: the first test rows as ``x`` (+ seeded ``noise``); None for families
    whose inputs are not feature rows (the example is then drawn from the graph's shapes)."""
    import numpy as np

    try:
        x = np.asarray(fam.features(fam.frame("test", rows)), dtype=np.float32)
    except Exception as err:  # e.g. families fed whole events
        log.debug("%s: no row input example (%s)", fam.spec.name, err)
        return None
    example = {"x": x}
    if fam.noise_dim:
        example["noise"] = np.random.default_rng(fam.spec.seed).standard_normal((len(x), fam.noise_dim))
    return example


def onnx_predictor(path: Path):
    from flashsim.export import onnx_predict, ort_session

    if not path.exists():
        raise InputError("exported model missing (run `flashsim export` first)", file=str(path))
    sess = ort_session(path)
    return lambda x, noise=None: onnx_predict(sess, x, noise)


def validate_model(fam, enforce_gates: bool = True) -> dict:
    """Metrics on the test split with the exported ONNX model, gates, report page, index; GateError on fail."""
    from flashsim import validation as V

    spec = fam.spec
    t0 = time.perf_counter()
    df = fam.frame("test", fam.cfg["validation_rows"])
    if len(df) == 0:
        raise InputError(f"{spec.name}: no test rows after selection", file=str(spec.prepared("test")))
    predict = onnx_predictor(spec.onnx_path)
    metrics, plots = fam.validate(df, predict, spec.report_dir)
    summary = fam.training_summary()
    if summary.get("history"):
        plots.append(V.plot_history(summary["history"], spec.report_dir / "training.png",
                                    [k for k in summary["history"][-1] if k.endswith("loss")]))
    plots = V.collect_figures(spec.report_dir, plots)  # reports/NAME/figures/ (flagged for `snakemake --report`)
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["validate_seconds"] = time.perf_counter() - t0
    gates = V.evaluate_gates(metrics, spec.gates)
    card = json.loads(spec.card_path.read_text()) if spec.card_path.exists() else None
    out = {"model": spec.name, "family": spec.family, "scale": spec.scale, "metrics": metrics, "gates": gates,
           "passed": all(g["passed"] for g in gates),
           "plots": [p.relative_to(spec.report_dir).as_posix() for p in plots]}
    write_json(spec.report_dir / "metrics.json", out)
    header = V.page_header(spec.name, spec.scale, family=spec.family, mlflow=V.mlflow_info(spec.name))
    V.write_model_page(spec.report_dir, spec.name, metrics, gates, plots, card, header=header)
    V.write_index(spec.report_dir.parent)
    with runs.start_model_job(fam, "validate") as run:
        run.set_tags({"gates_passed": out["passed"]})
        # validation.* metrics (local record + MLflow); MLflow: the report, version tags, alias `validated` when
        # the gates pass
        version = model_registry.record_validation(run, spec.name, spec.onnx_path, metrics, out["passed"],
                                                   report_dir=spec.report_dir, card=spec.card_path, gates=gates)
    if version and run.run_id:  # the page names the registered version it validated
        header["mlflow"] = V.mlflow_info(spec.name, run_id=run.run_id, tracking_uri=run.uri,
                                         experiment=run.experiment, version=version)
        V.write_model_page(spec.report_dir, spec.name, metrics, gates, plots, card, header=header)
    if enforce_gates:
        V.enforce(spec.name, gates)
    return out


__all__ = ["GateError", "export_model", "train_model", "validate_model"]
