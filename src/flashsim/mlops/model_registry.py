"""MLflow model registry: one registered model per exported model, aliases ``candidate`` -> ``validated`` ->
``production``.

* export: the ONNX file is logged as an MLflow ONNX model (``mlflow.onnx``: signature of its tensors ``x``, ``noise``
  -> ``y``, an input example; :mod:`flashsim.mlops.onnx_model`) and registered as a new version of the model's name
  (unless this run already registered the same bytes), alias ``candidate``; so
  ``mlflow.pyfunc.load_model("models:/NAME@validated")`` loads it. The ONNX file and its model card are also kept
  under the run's ``model/`` artifacts.
* validate: the version holding the validated ONNX bytes gets the validation metrics as tags
  (``validation.<metric>``), ``gates`` = passed/failed, and alias ``validated`` when the gates pass.
* ``flashsim promote NAME VERSION``: alias ``production`` (refused unless the gates passed, ``--force`` overrides).
"""

from __future__ import annotations

import getpass
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flashsim.config import flatten
from flashsim.errors import ConfigError, GateError
from flashsim.mlops import onnx_model
from flashsim.mlops.provenance import file_sha256
from flashsim.mlops.runs import FALLBACK_TAG, INTENDED_TAG, Run, Store, open_store, warn

CANDIDATE, VALIDATED, PRODUCTION = "candidate", "validated", "production"
ARTIFACT_DIR = "model"
SHA_TAG = "onnx_sha256"


def _ensure_registered_model(store: Store, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        store.client.get_registered_model(name)
    except MlflowException:
        try:
            store.client.create_registered_model(
                name, description=f"flashsim model '{name}' (ONNX, exported by `flashsim export {name}`)")
        except MlflowException:
            store.client.get_registered_model(name)  # created concurrently


def _versions(store: Store, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return sorted(store.client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    except MlflowException:
        return []


def register_export(run: Run, name: str, onnx: str | Path, card: str | Path | None = None,
                    example: Mapping[str, Any] | None = None) -> str | None:
    """Log ``onnx`` (+ card) under the run's ``model/`` artifacts and as an MLflow ONNX model (``example``: input
    name -> rows for its input example), register that model as a version, alias it ``candidate``.

    Returns the version (None when MLflow is off or failed). Re-exporting identical bytes within the same run
    reuses that version.
    """
    onnx = Path(onnx)
    sha = file_sha256(onnx)
    run.set_tags({"export.onnx_sha256": sha})
    if run.store is None:  # MLflow off (or failed for good): the local record only
        return None
    run.log_artifact(onnx, ARTIFACT_DIR)
    if card is not None:
        run.log_artifact(card, ARTIFACT_DIR)
    if not run.active:
        return None
    store = run.store
    assert store is not None
    try:
        with store.locked():
            _ensure_registered_model(store, name)
            same = [v for v in _versions(store, name) if v.run_id == run.run_id and v.tags.get(SHA_TAG) == sha]
            if same:
                version = same[-1].version
            else:
                tags = {SHA_TAG: sha, "onnx_file": onnx.name, "gates": "pending"}
                tags.update(_card_tags(card))
                model_id = _log_mlflow_model(run, name, onnx, example, sha, card)
                source = f"models:/{model_id}" if model_id else f"runs:/{run.run_id}/{ARTIFACT_DIR}"
                tags["mlflow_model"] = "onnx" if model_id else "none (plain ONNX artifact)"
                with onnx_model.fluent_uri(store.uri):  # a models:/<id> source resolves through the fluent URI
                    mv = store.client.create_model_version(name, source=source, run_id=run.run_id, tags=tags,
                                                           model_id=model_id,
                                                           description=f"exported by run {run.run_id}")
                version = mv.version
            store.client.set_registered_model_alias(name, CANDIDATE, version)
            if not same:
                point_to_newest(store, name, CANDIDATE)
    except Exception as err:
        warn(f"could not register {name} in the MLflow registry ({err})")
        return None
    run.set_tags({"registry.version": version})
    return str(version)


def point_to_newest(store: Store, name: str, alias: str, rounds: int = 20) -> None:
    """Move ``alias`` to the newest version of ``name`` until no newer one appears: jobs exporting the same model at
    once each set the alias after creating their version, so the last writer may hold an older version; every job
    re-reads after its write and corrects, so the alias ends on the newest version whatever the order."""
    for _ in range(rounds):
        newest = max((int(v.version) for v in _versions(store, name)), default=0)
        current = store.client.get_registered_model(name).aliases.get(alias)
        if not newest or (current is not None and int(current) >= newest):
            return
        store.client.set_registered_model_alias(name, alias, str(newest))


def _log_mlflow_model(run: Run, name: str, onnx: Path, example: Mapping[str, Any] | None, sha: str,
                      card: str | Path | None) -> str | None:
    """The logged MLflow ONNX model's id; None (after a warning) when the file cannot be logged as one, e.g. it is
    not a loadable ONNX graph: the version then points at the plain ``model/`` artifacts."""
    assert run.store is not None and run.run_id is not None
    try:
        return onnx_model.log_onnx_model(run.store.client, run.store.uri, run.run_id, name, onnx, example,
                                         tags={SHA_TAG: sha}, card=card)
    except Exception as err:
        warn(f"could not log {onnx} as an MLflow ONNX model ({type(err).__name__}: {err}); registering the plain "
              f"ONNX artifact (not loadable with mlflow.pyfunc)")
        return None


def _card_tags(card: str | Path | None) -> dict[str, str]:
    if card is None or not Path(card).exists():
        return {}
    try:
        data = json.loads(Path(card).read_text())
    except (OSError, ValueError):
        return {}
    tags = {}
    for key in ("family", "parity_max_deviation", "opset", "training_data_sha256", "training_data_hash"):
        if key in data and not isinstance(data[key], dict | list):
            tags[f"card.{key}"] = str(data[key])
    return tags


def scalar_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numeric leaves of a (nested) metrics dict, flattened with dots."""
    out = {}
    for k, v in flatten(dict(metrics), prefix).items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, int | float) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def record_validation(run: Run, name: str, onnx: str | Path, metrics: Mapping[str, Any], passed: bool,
                      report_dir: str | Path | None = None, card: str | Path | None = None,
                      gates: list[Mapping[str, Any]] | None = None) -> str | None:
    """Log validation metrics (``validation.*``, also in the run's local record) and the report; tag the version of
    these ONNX bytes and alias it ``validated`` when ``passed``. An ONNX file that was never registered is
    registered first (``candidate``). ``gates``: rows ``{metric, max|min, passed}`` (recorded as version tags
    ``gate.<metric>``)."""
    run.log_metrics(metrics, prefix="validation")
    run.set_tags({"validation.gates": "passed" if passed else "failed"})
    if run.store is None:  # MLflow off: the local record only
        return None
    if report_dir is not None:
        run.log_artifacts(report_dir, "report")
    if not run.active:
        return None
    store = run.store
    assert store is not None
    sha = file_sha256(onnx)
    try:
        with store.locked():
            matches = [v for v in _versions(store, name) if v.tags.get(SHA_TAG) == sha]
        if not matches:
            version = register_export(run, name, onnx, card)
            if version is None:
                return None
        else:
            mine = [v for v in matches if v.run_id == run.run_id]
            version = (mine or matches)[-1].version
        with store.locked():
            for k, v in scalar_metrics(metrics, "validation").items():
                store.client.set_model_version_tag(name, version, k, repr(v))
            for g in gates or []:
                limit = " ".join(f"{'<=' if k == 'max' else '>='} {g[k]}" for k in ("min", "max") if k in g)
                store.client.set_model_version_tag(name, version, f"gate.{g['metric']}",
                                                   f"{limit} {'ok' if g.get('passed') else 'FAILED'}")
            store.client.set_model_version_tag(name, version, "gates", "passed" if passed else "failed")
            store.client.set_model_version_tag(name, version, "validation_run_id", run.run_id)
            if passed:
                store.client.set_registered_model_alias(name, VALIDATED, version)
    except Exception as err:
        warn(f"could not record the validation of {name} in the MLflow registry ({err})")
        return None
    return str(version)


# ------------------------------------------------------------------------------------------------- queries


def registry_store(root: Path | None = None) -> Store:
    """The store that commands read from (the configured server, or the local store)."""
    store, fallback = open_store(root)
    if fallback:
        raise ConfigError(f"MLflow server {fallback[INTENDED_TAG]} is unreachable: {fallback[FALLBACK_TAG]}")
    return store


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` | ``NAME/VERSION`` | ``NAME`` (-> production, else validated, else candidate, else latest)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if alias.isdigit():
            return name, alias, None
        return name, None, alias
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, version, None
    return ref, None, None


def resolve(store: Store, ref: str):
    """The model version that ``ref`` names; ConfigError when there is none."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_ref(ref)
    try:
        if version is not None:
            return store.client.get_model_version(name, version)
        if alias is not None:
            return store.client.get_model_version_by_alias(name, alias)
        for a in (PRODUCTION, VALIDATED, CANDIDATE):
            try:
                return store.client.get_model_version_by_alias(name, a)
            except MlflowException:
                continue
        versions = _versions(store, name)
        if versions:
            return versions[-1]
    except MlflowException as err:
        raise ConfigError(f"no registered model version '{ref}' in {store.uri}: {err.message}") from None
    raise ConfigError(f"no registered model version '{ref}' in {store.uri}")


def promote(store: Store, name: str, version: str, force: bool = False) -> Any:
    """Alias ``production`` -> ``name`` version ``version``; only versions whose gates passed (unless ``force``)."""
    mv = resolve(store, f"{name}/{version}")
    if mv.tags.get("gates") != "passed" and not force:
        raise GateError(f"{name} version {version}: gates {mv.tags.get('gates', 'unknown')}; only validated versions "
                        f"can be promoted (use --force to override)")
    store.client.set_registered_model_alias(name, PRODUCTION, mv.version)
    store.client.set_model_version_tag(name, mv.version, "promoted_by", getpass.getuser())
    store.client.set_model_version_tag(name, mv.version, "promoted_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return mv


def model_names(store: Store, names: list[str] | None = None) -> list[str]:
    found = sorted(m.name for m in store.client.search_registered_models(max_results=1000))
    if not names:
        return found
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"no registered model named {', '.join(missing)} in {store.uri} "
                          f"(registered: {', '.join(found) or 'none'})")
    return list(names)


def version_rows(store: Store, name: str) -> list[dict[str, Any]]:
    """One dict per version: version, aliases, gates, run, git sha, created, onnx sha and validation metrics."""
    rows = []
    by_version = aliases(store, name)
    for v in _versions(store, name):
        row: dict[str, Any] = {
            "model": name, "version": str(v.version), "aliases": by_version.get(str(v.version), []),
            "gates": v.tags.get("gates", ""), "run_id": v.run_id or "",
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000)),
            "onnx_sha256": v.tags.get(SHA_TAG, ""), "git_sha": "", "metrics": version_metrics(v),
            "gate_limits": {k[len("gate."):]: t for k, t in sorted(v.tags.items()) if k.startswith("gate.")}}
        if v.run_id:
            try:
                row["git_sha"] = store.client.get_run(v.run_id).data.tags.get("git.sha", "")
            except Exception:
                pass
        rows.append(row)
    return rows


def version_metrics(mv: Any) -> dict[str, float]:
    """Validation metrics of one version (tags written by :func:`record_validation`; a run's metrics hold only
    the latest values when one run exported several versions)."""
    return {k: float(t) for k, t in sorted(mv.tags.items()) if k.startswith("validation.") and _isfloat(t)}


def aliases(store: Store, name: str) -> dict[str, list[str]]:
    """version -> sorted aliases (search results do not carry aliases on every store)."""
    out: dict[str, list[str]] = {}
    for alias, version in (store.client.get_registered_model(name).aliases or {}).items():
        out.setdefault(str(version), []).append(alias)
    return {k: sorted(v) for k, v in out.items()}


def _isfloat(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def provenance(store: Store, ref: str) -> dict[str, Any]:
    """Everything needed to rebuild a registered version: git, patch, data hashes, params, environment, metrics."""
    import mlflow.artifacts
    import yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mv = resolve(store, ref)
    run = store.client.get_run(mv.run_id)
    tags = run.data.tags
    info: dict[str, Any] = {
        "model": mv.name, "version": str(mv.version), "aliases": aliases(store, mv.name).get(str(mv.version), []),
        "gates": mv.tags.get("gates", ""), "onnx_sha256": mv.tags.get(SHA_TAG, ""), "source": mv.source,
        "run_id": mv.run_id, "tracking_uri": store.uri,
        "git": {"sha": tags.get("git.sha", "unknown"), "dirty": tags.get("git.dirty", "unknown") == "true",
                "jobs": {j: {"sha": tags.get(f"{j}.git.sha"), "dirty": tags.get(f"{j}.git.dirty") == "true"}
                         for j in ("train", "export", "validate") if f"{j}.git.sha" in tags}},
        "data": {k[len("data."):-len(".sha256")]: {"sha256": val, "path": tags.get(k[:-len("sha256")] + "path", "")}
                 for k, val in sorted(tags.items()) if k.startswith("data.") and k.endswith(".sha256")},
        "params": dict(sorted(run.data.params.items())),
        "metrics": version_metrics(mv),
        "jobs": {k: v for k, v in sorted(tags.items())
                 if k.split(".")[0] in ("train", "export", "validate") and not k.endswith(".git.sha")},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for job in ("train", "export"):
            try:
                d = Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=f"provenance/{job}",
                                                             dst_path=tmp, tracking_uri=store.uri))
            except Exception:
                continue
            entry: dict[str, Any] = {}
            if (d / "params.yaml").exists():
                entry["config"] = yaml.safe_load((d / "params.yaml").read_text())
            if (d / "environment.json").exists():
                entry["environment"] = json.loads((d / "environment.json").read_text())
            if (d / "git.patch").exists():
                entry["git_patch"] = (d / "git.patch").read_text()
            info.setdefault("provenance", {})[job] = entry
    return info
