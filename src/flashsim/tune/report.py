"""The study's report: ``results/tune/NAME/report.json`` and ``report.md`` (trials, best vs the baseline trial,
the Pareto front of quality vs inference cost) and the override proposal ``results/tune/NAME/override.yaml``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from flashsim.io.atomic import atomic_output, write_json
from flashsim.tune import storage as S
from flashsim.tune.space import TuneConfig
from flashsim.tune.worker import BASELINE_ATTR, tune_dir
from flashsim.tuned import write_proposal


def _trial_row(t: Any) -> dict[str, Any]:
    return {"number": t.number, "state": t.state.name, "values": t.values if t.state.name == "COMPLETE" else None,
            "params": t.params,
            "intermediate_steps": len(t.intermediate_values), "baseline": bool(t.user_attrs.get(BASELINE_ATTR)),
            "retry_of": t.system_attrs.get("failed_trial"), "worker": t.user_attrs.get("worker"),
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None,
            "metrics": {k[len("metric."):]: v for k, v in t.user_attrs.items() if k.startswith("metric.")}}


def summarize(study: Any, tc: TuneConfig, url: str, root: Path, study_name: str) -> dict[str, Any]:
    """The report dict; writes report.json, report.md and (when a trial completed) the override proposal."""
    from optuna.trial import TrialState

    from flashsim.mlops import tuning

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    out: dict[str, Any] = {"model": tc.model, "study": study_name, "storage": S.redact(url, root),
                           "metrics": tc.metric_names, "directions": tc.directions, "states": states,
                           "trials": [_trial_row(t) for t in trials]}
    sign = 1.0 if tc.direction == "minimize" else -1.0
    baseline = next((t for t in done if t.user_attrs.get(BASELINE_ATTR)), None)
    if done:
        if tc.cost:
            front = sorted(study.best_trials, key=lambda t: t.values[1])
            out["pareto_front"] = [{"number": t.number, "values": dict(zip(tc.metric_names, t.values, strict=True)),
                                    "params": t.params} for t in front]
            best = min(front, key=lambda t: sign * t.values[0])  # the override: best quality on the front
        else:
            best = study.best_trial
        out["best"] = {"trial": best.number, "values": dict(zip(tc.metric_names, best.values, strict=True)),
                       "params": best.params}
        if baseline is not None:
            out["baseline"] = {"trial": baseline.number,
                               "values": dict(zip(tc.metric_names, baseline.values, strict=True))}
            out["improved"] = bool(sign * best.values[0] < sign * baseline.values[0])
        record = {"study": {"name": study_name, "storage": S.redact(url, root), "trial": best.number,
                            "objective": {m: float(v) for m, v in zip(tc.metric_names, best.values, strict=True)},
                            "baseline_objective": None if baseline is None else float(baseline.values[0]),
                            "fixed_during_study": tc.fixed,
                            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}
        out["override"] = str(write_proposal(tune_dir(root, study_name) / "override.yaml", tc.model,
                                             dict(best.params), record))
        tuning.tag_best(root, study.user_attrs.get(tuning.PARENT_ATTR), out["best"])
    folder = tune_dir(root, study_name)
    write_json(folder / "report.json", out)
    with atomic_output(folder / "report.md") as tmp:
        Path(tmp).write_text(markdown(out))
    return out


def markdown(rep: dict[str, Any]) -> str:
    """The report as Markdown: outcome, best vs baseline, Pareto front, trials."""
    objectives = ", ".join(f"{m} ({d})" for m, d in zip(rep["metrics"], rep["directions"], strict=True))
    lines = [f"# Tuning study `{rep['study']}` of `{rep['model']}`", "",
             f"storage `{rep['storage']}`; objectives {objectives}; "
             f"trials: {', '.join(f'{k} {v}' for k, v in rep['states'].items() if v)}", ""]
    if "best" in rep:
        lines.append(f"best trial {rep['best']['trial']}: {json.dumps(rep['best']['values'])} with "
                     f"`{json.dumps(rep['best']['params'])}`")
    if "baseline" in rep:
        verdict = "improved on" if rep["improved"] else "did NOT improve on"
        lines.append(f"\nThe study {verdict} the baseline trial {rep['baseline']['trial']} (params.yaml's values): "
                     f"{json.dumps(rep['baseline']['values'])}")
    if rep.get("pareto_front"):
        lines += ["", "## Pareto front (quality vs inference cost)", "", "| trial | " +
                  " | ".join(rep["metrics"]) + " | params |", "|---" * (len(rep["metrics"]) + 2) + "|"]
        for t in rep["pareto_front"]:
            lines.append(f"| {t['number']} | " + " | ".join(f"{t['values'][m]:.6g}" for m in rep["metrics"])
                         + f" | `{json.dumps(t['params'])}` |")
    lines += ["", "## Trials", "", "| trial | state | values | params |", "|---|---|---|---|"]
    for t in rep["trials"]:
        vals = "" if t["values"] is None else ", ".join(f"{v:.6g}" for v in t["values"])
        lines.append(f"| {t['number']} | {t['state']} | {vals} | `{json.dumps(t['params'])}` |")
    if "override" in rep:
        lines += ["", f"Override proposal: `{rep['override']}` (review, then `flashsim tune {rep['model']} --accept`)"]
    return "\n".join(lines) + "\n"
