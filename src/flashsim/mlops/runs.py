"""The run object of a flashsim job (train, export or validate of one model) and its MLflow store.

Every job reports to one :class:`Run`, which writes two records:

* the **local record**, always (also with MLflow off): ``metrics.jsonl`` (one JSON line per ``log_metrics``: step,
  time, metrics), ``params.json`` and ``tags.json`` (merged) in the job's ``outdir``, for model jobs
  ``results/train/<model>/`` next to the checkpoints;
* the model's **MLflow run**: one run per model build (train -> export -> validate). ``train`` starts a new run and
  remembers its id in ``results/train/<model>/mlflow.json``; ``export`` and ``validate`` continue that run, so one
  run holds params, per-epoch metrics, validation metrics, artifacts and the provenance of each job.

Where MLflow runs go
    * ``MLFLOW_TRACKING_URI`` set: that store (the team's ``mlflow server``).
    * unset: the local SQLite store ``sqlite:///<repo>/mlflow.db``, artifacts in ``<repo>/mlruns/``
      (browse with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``).
    * ``FLASHSIM_MLFLOW=off``: no MLflow run; the local record and the job itself are unchanged.

Training is never lost to MLflow: if the server does not answer at the start, or fails during the job, a warning is
printed and the run is recorded in the local store (everything logged so far is replayed there) with the tags
``flashsim.mlflow.fallback`` (the reason), ``flashsim.mlflow.intended_uri`` and, when the server run existed,
``flashsim.mlflow.intended_run_id``. Snakemake rules name the job with ``FLASHSIM_SMK_RULE`` /
``FLASHSIM_SMK_WILDCARDS`` (``rules/common.smk``).

Names: experiments ``flashsim/<model>`` carry a description and ``mlflow.experimentKind`` (the UI opens on runs);
a run is named ``<model> <git sha8> p<params hash>``, or ``<model> <DVC_EXP_NAME>`` inside ``dvc exp run``. Under
Snakemake each model run is a child (``mlflow.parentRunId``) of the invocation's run in ``flashsim/workflow``
(:mod:`flashsim.mlops.workflow`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flashsim.config import flatten, repo_root
from flashsim.io.atomic import atomic_output, write_json
from flashsim.mlops.provenance import code_root, environment, file_sha256, git_state, job_tags, redact, redact_tree

log = logging.getLogger(__name__)

LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "mlruns"
EXPERIMENT = "flashsim/{model}"
STATE_FILE = "results/train/{model}/mlflow.json"
ENV_SWITCH = "FLASHSIM_MLFLOW"
FALLBACK_TAG, INTENDED_TAG = "flashsim.mlflow.fallback", "flashsim.mlflow.intended_uri"
INTENDED_RUN_TAG = "flashsim.mlflow.intended_run_id"
NONFINITE_TAG = "flashsim.nonfinite"
HOST_TAG, PID_TAG, STALE_TAG = "flashsim.host", "flashsim.pid", "flashsim.stale"
_BATCH = 100  # MLflow's per-request limit on params and tags
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
PARENT_RUN_ENV, PARENT_URI_ENV = "FLASHSIM_PARENT_RUN", "FLASHSIM_PARENT_URI"  # set by flashsim.mlops.workflow
FLUSH_SECONDS = 2.0  # buffered metrics are sent at least this often


def enabled() -> bool:
    """False when ``FLASHSIM_MLFLOW`` is ``off``/``0``/``false``/``no``."""
    return os.environ.get(ENV_SWITCH, "on").strip().lower() not in {"off", "0", "false", "no"}


def local_uri(root: Path | None = None) -> str:
    """The default store: SQLite file in the repository root."""
    return f"sqlite:///{(root or repo_root()) / LOCAL_DB}"


def server_reachable(uri: str, timeout: float = 5.0) -> str | None:
    """None when an http(s) MLflow server answers ``/health``; else the reason. Other schemes: None."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        return f"{type(err).__name__}: {err}"
    return None if resp.ok else f"HTTP {resp.status_code} from {uri}/health"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Store:
    """An MLflow client bound to one tracking URI (plus the local artifact root for the SQLite store)."""

    def __init__(self, uri: str, root: Path) -> None:
        from mlflow import MlflowClient

        self.uri, self.root = uri, root
        self.local = uri.startswith("sqlite:")
        self.lock_path = root / f"{LOCAL_DB}.lock"
        if self.local:
            # Several Snakemake jobs may open a fresh store at once: create its tables exactly once.
            with _file_lock(self.lock_path):
                self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                self.client.search_experiments(max_results=1)
        else:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def locked(self) -> contextlib.AbstractContextManager:
        """Serialise writes to the local SQLite file (concurrent Snakemake jobs); no-op for servers."""
        return _file_lock(self.lock_path) if self.local else contextlib.nullcontext()

    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            for key, value in experiment_tags(name).items():
                if key not in exp.tags:  # an experiment made before these tags existed
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = (self.root / LOCAL_ARTIFACTS).as_uri() if self.local else None
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=experiment_tags(name))
        except MlflowException:  # created concurrently by another job
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def experiment_tags(name: str) -> dict[str, str]:
    """The experiment kind (MLflow 3 opens an experiment without it on the GenAI traces page) and a description."""
    what = name.split("/", 1)[-1]
    if what == "workflow":
        text = ("One run per Snakemake invocation (`snakemake`, `dvc exp run`): its children are the model runs it "
                "touched, in the experiments `flashsim/<model>` (search `tags.mlflow.parentRunId = '<run id>'`).")
    else:
        text = (f"Builds of the flashsim model `{what}`: one run per train -> export -> validate, holding the "
                "params, per-epoch and validation metrics, the ONNX model (registered as `" + what + "`, aliases "
                "candidate / validated / production) and the report. Run names: `<model> <git sha8> p<params "
                "hash>`, or the DVC experiment name.")
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, DESCRIPTION_TAG: text}


def params_hash(params: Any) -> str:
    """8 hex digits of the canonical JSON of ``params``: tells hyperparameter variants at one commit apart."""
    import hashlib

    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_name(model: str, git: Mapping[str, Any], phash: str) -> str:
    """``<model> <DVC_EXP_NAME>`` inside ``dvc exp run``, else ``<model> <sha8>[+dirty] p<params hash>``."""
    exp = os.environ.get("DVC_EXP_NAME", "").strip()
    if exp:
        return f"{model} {exp}"
    return f"{model} {git['sha'][:8]}{'+dirty' if git['dirty'] else ''} p{phash}"


def parent_tags(uri: str, kind: str) -> dict[str, str]:
    """Tags making the run a child of the Snakemake invocation's run (``FLASHSIM_PARENT_RUN``, same store only).
    A run continued by a later invocation moves to that invocation; ``<kind>.workflow_run_id`` keeps each job's."""
    parent = os.environ.get(PARENT_RUN_ENV, "").strip()
    if not parent or os.environ.get(PARENT_URI_ENV, "").strip() != uri:
        return {}
    return {"mlflow.parentRunId": parent, f"{kind}.workflow_run_id": parent}


def open_store(root: Path | None = None, timeout: float = 5.0) -> tuple[Store, dict[str, str]]:
    """The store to record in, and fallback tags (empty unless the configured server is unreachable)."""
    root = root or repo_root()
    uri = credentials_to_env(os.environ.get("MLFLOW_TRACKING_URI", "").strip())
    if not uri:
        return Store(local_uri(root), root), {}
    reason = server_reachable(uri, timeout)
    if reason is None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        return Store(uri, root), {}
    _warn_fallback(uri, reason, root)
    return Store(local_uri(root), root), {FALLBACK_TAG: redact(reason)[:500], INTENDED_TAG: redact(uri)}


def credentials_to_env(uri: str) -> str:
    """``uri`` without userinfo: ``http://USER:PW@host`` becomes ``http://host`` with ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` set (unless already set), and ``MLFLOW_TRACKING_URI`` rewritten, so the credentials
    never reach a log line, a tag or the local state file; MLflow's client sends them as HTTP basic auth."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.scheme.startswith("http") or "@" not in parts.netloc:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(user))
    if password:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(password))
    clean = urlunsplit(parts._replace(netloc=host))
    os.environ["MLFLOW_TRACKING_URI"] = clean
    return clean


def warn(msg: str) -> None:
    """A warning in the job log and on stderr, credentials in URIs redacted (MLflow's errors quote request URLs)."""
    msg = redact(msg)
    log.warning(msg)
    print(f"flashsim: WARNING: {msg}", file=sys.stderr)


def _warn_fallback(uri: str, reason: str, root: Path) -> None:
    warn(f"MLflow tracking server {uri} is unreachable ({reason}); recording this run in the local store "
         f"{local_uri(root)} instead (tagged {FALLBACK_TAG}).")


# --------------------------------------------------------------------------------------------------- the run


def _param_value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return json.dumps(list(v), default=str)
    return str(v)


def _metric_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _merge_json(path: Path, update: Mapping[str, Any]) -> None:
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({k: v if isinstance(v, int | float | str | bool) or v is None else str(v) for k, v in update.items()})
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(old, indent=2, sort_keys=True))


class Run:
    """What one job reports to: its local record (in ``outdir``; none when ``outdir`` is None) and, when ``store``
    is set, its MLflow run (see the module docstring).

    ``log_params``, ``set_tags`` and ``log_metrics`` write both records; artifacts, texts and datasets go to MLflow
    only (their files already live on disk). MLflow failures are swallowed after a warning so the job goes on. Use
    as a context manager: the run ends FINISHED, FAILED on an exception (its message saved as the ``<kind>.error``
    tag; the exception propagates) or KILLED on Ctrl-C. Runs are started by :func:`start_job` and
    :func:`start_model_job`; ``Run(model, kind, outdir)`` alone is a run with the local record only.
    """

    def __init__(self, model: str, kind: str, outdir: str | Path | None = None, *, root: Path | None = None,
                 store: Store | None = None, run_id: str | None = None, experiment: str = "",
                 extra_tags: Mapping[str, str] | None = None) -> None:
        self.model, self.kind = model, kind
        self.outdir = Path(outdir) if outdir is not None else None
        self.root = root or Path.cwd()
        self.store, self.run_id, self.experiment = store, run_id, experiment
        self._journal: list[tuple[str, tuple, dict]] = []
        self._extra_tags = dict(extra_tags or {})
        self._closed = False
        self._pending: list = []
        self._flushed = time.monotonic()
        self._nonfinite: set[str] = set()

    # -- state
    @property
    def active(self) -> bool:
        """True while the job has a live MLflow run."""
        return self.store is not None and self.run_id is not None

    @property
    def uri(self) -> str | None:
        return self.store.uri if self.store else None

    @property
    def fallback(self) -> bool:
        return FALLBACK_TAG in self._extra_tags

    # -- logging API: local record + MLflow
    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        """Flattened params (``a.b.c``); in MLflow as strings (lists as JSON)."""
        flat = flatten(dict(params), prefix) if params else {}
        self._local("params.json", flat)
        self._mlflow_params(flat)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._local("tags.json", tags)
        self._mlflow_tags(tags)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
        """Numeric entries of ``metrics`` (nested dicts flattened, booleans as 0/1); non-numeric values are skipped,
        and so are non-finite ones in MLflow."""
        values = {k: float(v) for k, v in flatten(dict(metrics), prefix).items()
                  if isinstance(v, numbers.Real) or getattr(v, "ndim", None) == 0}  # numpy, 0-d tensors too
        if self.outdir is not None and values:
            self.outdir.mkdir(parents=True, exist_ok=True)
            with open(self.outdir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        if self.store is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(_metric_key(k), v, now, step or 0) for k, v in sorted(values.items())
                             if math.isfinite(v))
        self._flag_nonfinite(values, step, now)
        if len(self._pending) >= 500 or time.monotonic() - self._flushed > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send buffered MLflow metrics (a tree booster logs one point per iteration: one request per few seconds)."""
        pending, self._pending = self._pending, []
        self._flushed = time.monotonic()
        for i in range(0, len(pending), 1000):
            self._do("log_batch", metrics=pending[i:i + 1000])

    def _flag_nonfinite(self, values: Mapping[str, float], step: int | None, now: int) -> None:
        """NaN/inf values are not charted by MLflow: record each as the metric ``<key>.nonfinite`` = 1 at its step
        and the tag ``flashsim.nonfinite.<key>`` (the value and the first step), so a diverging loss is visible."""
        from mlflow.entities import Metric

        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if not bad:
            return
        self._pending.extend(Metric(_metric_key(f"{k}.nonfinite"), 1.0, now, step or 0) for k in sorted(bad))
        new = {f"{NONFINITE_TAG}.{_metric_key(k)}": f"{v} at step {step or 0}" for k, v in bad.items()
               if k not in self._nonfinite}
        self._nonfinite.update(bad)
        if new:
            self._mlflow_tags(new)

    # -- MLflow only
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a directory's content (under ``artifact_path`` or the directory's name)."""
        if Path(path).is_dir():
            self.log_artifacts(path, artifact_path or Path(path).name)
        elif Path(path).exists():
            self._do("log_artifact", str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        if Path(directory).is_dir():
            self._do("log_artifacts", str(directory), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._do("log_text", redact(text), artifact_file)

    def log_dataset(self, label: str, path: str | Path, sha256: str | None = None) -> str | None:
        """Record an input file as an MLflow dataset (context = ``label``) plus ``data.<label>.*`` tags."""
        path = Path(path)
        if self.store is None or not path.is_file():
            return None
        digest = sha256 or file_sha256(path)
        self._mlflow_tags({f"data.{label}.sha256": digest, f"data.{label}.path": _relpath(path, self.root)})
        try:
            entity = _dataset_entity(path, label, digest)
        except Exception as err:  # a schema we cannot read must not stop the job
            log.debug("dataset schema for %s: %s", path, err)
            return digest
        from mlflow.entities import DatasetInput, InputTag

        self._do("log_inputs", datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", label)])])
        return digest

    # -- machinery
    def _local(self, name: str, values: Mapping[str, Any]) -> None:
        if self.outdir is not None and values:
            self.outdir.mkdir(parents=True, exist_ok=True)
            _merge_json(self.outdir / name, redact_tree(dict(values)))

    def _mlflow_params(self, flat: Mapping[str, Any], replay_only: bool = False) -> None:
        """``replay_only``: keep them for a fallback run only (a continued run already has its params)."""
        if self.store is None:
            return
        from mlflow.entities import Param

        items = [Param(k, redact(_param_value(v))[:6000]) for k, v in sorted(flat.items())]
        for i in range(0, len(items), _BATCH):
            self._do("log_batch", params=items[i:i + _BATCH], replay_only=replay_only)

    def _mlflow_tags(self, tags: Mapping[str, Any]) -> None:
        if self.store is None:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, redact(str(v))[:8000]) for k, v in sorted(tags.items())]
        for i in range(0, len(items), _BATCH):
            self._do("log_batch", tags=items[i:i + _BATCH])

    def _do(self, method: str, *args: Any, replay_only: bool = False, **kwargs: Any) -> None:
        if self.store is None:
            return
        self._journal.append((method, args, kwargs))
        if replay_only or self.run_id is None:
            return
        self._send(method, args, kwargs)

    def _send(self, method: str, args: tuple, kwargs: dict) -> None:
        assert self.store is not None
        try:
            with self.store.locked():
                getattr(self.store.client, method)(self.run_id, *args, **kwargs)
        except Exception as err:
            self._failed(err)

    def _failed(self, err: Exception) -> None:
        assert self.store is not None
        if self.store.local:
            warn(f"MLflow local store {self.store.uri} failed ({err}); MLflow disabled for the rest of this job.")
            self.store, self.run_id = None, None
            return
        intended = self.store.uri
        reason = f"failed during the job: {type(err).__name__}: {err}"
        _warn_fallback(intended, reason, self.root)
        self._extra_tags.update({FALLBACK_TAG: redact(reason)[:500], INTENDED_TAG: redact(intended),
                                 INTENDED_RUN_TAG: self.run_id or ""})
        try:
            self.store = Store(local_uri(self.root), self.root)
            with self.store.locked():
                exp = self.store.experiment_id(self.experiment)
                self.run_id = self.store.client.create_run(exp, tags=self._extra_tags).info.run_id
        except Exception as err2:
            self.store = None
            self.run_id = None
            log.warning("local MLflow store failed too (%s): MLflow disabled for this job", err2)
            return
        journal, self._journal = self._journal, []
        for method, args, kwargs in journal:
            self._journal.append((method, args, kwargs))
            if self.store is None:
                return
            self._send(method, args, kwargs)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """FINISHED, FAILED on an exception (its message saved as ``<kind>.error``) or KILLED on Ctrl-C."""
        if exc_type is None:
            self.close("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("KILLED")
        else:
            self.set_tags({f"{self.kind or 'job'}.error": f"{exc_type.__name__}: {exc}"[:2000]})
            self.close("FAILED")

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run (FINISHED, FAILED or KILLED); later calls are no-ops."""
        if not self.active or self._closed:
            return
        self._closed = True
        self.flush()
        if not self.active:
            return
        assert self.store is not None
        try:
            with self.store.locked():
                self.store.client.set_terminated(self.run_id, status=status)
        except Exception as err:
            self._failed(err)
            if self.active:
                with contextlib.suppress(Exception), self.store.locked():
                    self.store.client.set_terminated(self.run_id, status=status)


def _relpath(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _dataset_entity(path: Path, label: str, digest: str):
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, DataType, Schema

    schema = None
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        def dtype(t: pa.DataType) -> DataType:
            if pa.types.is_floating(t):
                return DataType.float if t.bit_width == 32 else DataType.double
            if pa.types.is_boolean(t):
                return DataType.boolean
            if pa.types.is_integer(t):
                return DataType.integer if t.bit_width <= 32 else DataType.long
            return DataType.string

        schema = Schema([ColSpec(dtype(f.type), f.name) for f in pq.read_schema(path)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(path.resolve()))
    name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return MetaDataset(source, name=name, digest=digest[:32], schema=schema)._to_mlflow_entity()


def state_path(model: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / STATE_FILE.format(model=model)


def _read_state(model: str, root: Path) -> dict[str, str]:
    try:
        return json.loads(state_path(model, root).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(model: str, root: Path, run: Run) -> None:
    with contextlib.suppress(OSError):
        write_json(state_path(model, root), {"tracking_uri": run.uri, "run_id": run.run_id,
                                              "experiment": run.experiment})


def _resumable(store: Store, state: Mapping[str, str]) -> bool:
    if not state.get("run_id") or state.get("tracking_uri") != store.uri:
        return False
    try:
        run = store.client.get_run(state["run_id"])
    except Exception:
        return False
    return run.info.lifecycle_stage == "active"


def start_job(kind: str, model: str, *, params: Mapping[str, Any] | None = None,
              config: Mapping[str, Any] | None = None, inputs: Mapping[str, str | Path] | None = None,
              device: str | None = None, root: Path | None = None, new_run: bool | None = None,
              outdir: str | Path | None = None, phash: str | None = None) -> Run:
    """Start one ``kind`` job (train/export/validate) of ``model``; end it with ``run.close()`` (or use ``with``).

    ``params``: the model's hyperparameters (MLflow params); ``config``: the whole effective configuration (saved as
    ``provenance/<kind>/params.yaml``); ``inputs``: label -> input file (hashed, logged as datasets and
    ``data.<label>.sha256`` tags). ``new_run`` defaults to True for train, else the job continues the model's last
    MLflow run (``results/train/<model>/mlflow.json``). ``outdir``: the local record (default:
    ``results/train/<model>/``). ``phash``: the params hash in the run name (default: of ``params`` or ``config``).
    """
    root = (root or repo_root()).resolve()
    outdir = Path(outdir) if outdir is not None else state_path(model, root).parent
    if not enabled():
        return Run(model, kind, outdir, root=root)
    phash = phash or params_hash(params if params is not None else config)
    return _start(kind, model, outdir, params, config, inputs, device, root,
                  kind == "train" if new_run is None else new_run, phash)


def start_model_job(fam: Any, kind: str) -> Run:
    """:func:`start_job` for a model family instance (``flashsim.models``): local record in its ``train_dir``; its
    effective config, and as inputs the prepared splits it reads (train: ``training_files()``, export/validate: the
    test split) plus, for train, the raw files of its sample."""
    spec = fam.spec
    files = list(fam.training_files()) if kind == "train" else [spec.prepared("test")]
    inputs: dict[str, Path] = {f"{Path(f).parent.name}.{Path(f).stem}": Path(f) for f in files}
    config = getattr(fam, "config", None) or spec.params
    if kind == "train":
        for f in (config.get("inputs", {}).get(spec.sample, {}).get("files") or []):
            path = spec.root / f
            if "://" not in f and path.is_file():
                inputs[f"raw.{path.name}"] = path
    return start_job(kind, spec.name, config=config, inputs=inputs, root=spec.root, outdir=spec.train_dir,
                     phash=params_hash({"model": spec.cfg, "seed": spec.seed, "scale": spec.scale}))


def _start(kind: str, model: str, outdir: Path, params, config, inputs, device, root: Path, new_run: bool,
           phash: str = "") -> Run:
    try:
        store, extra = open_store(root)
    except Exception as err:
        warn(f"cannot open the MLflow store ({err}); no MLflow run for this job")
        return Run(model, kind, outdir, root=root)
    state = {} if new_run else _read_state(model, root)
    experiment = EXPERIMENT.format(model=model)
    extra = {**extra, **parent_tags(store.uri, kind)}
    run = Run(model, kind, outdir, root=root, store=store, experiment=experiment, extra_tags=extra)
    git = git_state(code_root(root))
    try:
        with store.locked():
            resumed = bool(state) and _resumable(store, state)
            if resumed:
                run.run_id = state["run_id"]
                store.client.update_run(run.run_id, status="RUNNING")
            else:
                exp = store.experiment_id(experiment)
                name = run_name(model, git, phash)
                tags = {"mlflow.runName": name, "flashsim.model": model, "flashsim.first_job": kind,
                        "flashsim.params_hash": phash, **extra}
                if os.environ.get("DVC_EXP_NAME"):
                    tags["flashsim.dvc_exp"] = os.environ["DVC_EXP_NAME"]
                if state.get("run_id"):
                    tags["flashsim.previous_run_id"] = state["run_id"]
                run.run_id = store.client.create_run(exp, run_name=name, tags=tags).info.run_id
            mark_owner(store, run.run_id)
            fail_stale_runs(store, experiment, model, keep=run.run_id)
    except Exception as err:
        if store.local:
            log.warning("local MLflow store failed (%s): no MLflow run for this job", err)
            return Run(model, kind, outdir, root=root)
        run.run_id = None
        run._failed(err)
        resumed = False
    if kind == "train" or not resumed:
        _write_state(model, root, run)
    _log_start(run, params, config, inputs, device, git, resumed)
    return run


def _log_start(run: Run, params, config, inputs, device, git: dict, resumed: bool) -> None:
    """The provenance of the job, in MLflow only: job tags, git state, environment, configuration, inputs."""
    import yaml

    kind = run.kind
    jt = job_tags(kind, device)
    tags: dict[str, Any] = {f"{kind}.{k}": v for k, v in jt.items()}
    tags.update({f"{kind}.git.sha": git["sha"], f"{kind}.git.dirty": str(git["dirty"]).lower(), **run._extra_tags})
    if not resumed:
        tags.update({"git.sha": git["sha"], "git.dirty": str(git["dirty"]).lower(), "mlflow.source.git.commit":
                     git["sha"], "mlflow.source.name": f"flashsim {kind} {run.model}", "mlflow.source.type": "JOB",
                     **jt})
    if config is not None:
        tags["scale"] = config.get("scale", "")
        tags["seed"] = config.get("seed", "")
    # params of a run are immutable: send them only to a new run (kept in the journal for a fallback replay)
    run_params = dict(params or {})
    if config is not None and "seed" in config:
        run_params.update({"seed": config["seed"], "scale": config.get("scale", "")})
    run._mlflow_params(flatten(run_params) if run_params else {}, replay_only=resumed)
    run._mlflow_tags(tags)
    prefix = f"provenance/{kind}"
    if config is not None:
        run.log_text(yaml.safe_dump(_plain(config), sort_keys=False), f"{prefix}/params.yaml")
    run.log_text(json.dumps(environment(), indent=2), f"{prefix}/environment.json")
    run.log_text(json.dumps({k: v for k, v in git.items() if k != "patch"}, indent=2), f"{prefix}/git.json")
    if git.get("patch"):
        run.log_text(git["patch"], f"{prefix}/git.patch")
    for label, path in (inputs or {}).items():
        run.log_dataset(label, path)


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ------------------------------------------------------------------------------------------------ stale runs


def mark_owner(store: Store, run_id: str) -> None:
    """Tag the run with the host and pid of the job now writing it (see :func:`fail_stale_runs`)."""
    import socket

    store.client.set_tag(run_id, HOST_TAG, socket.gethostname())
    store.client.set_tag(run_id, PID_TAG, str(os.getpid()))


def fail_stale_runs(store: Store, experiment: str, model: str, keep: str | None = None) -> list[str]:
    """End as FAILED (tag ``flashsim.stale``) the RUNNING runs of ``model`` whose job is gone: owned by a process
    of this host that no longer exists (a SIGKILLed or crashed job). Runs of other hosts are left alone."""
    import socket

    from flashsim.io.atomic import pid_alive

    exp = store.client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    host, failed = socket.gethostname(), []
    for r in store.client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = r.data.tags
        if r.info.run_id == keep or tags.get("flashsim.model") != model or tags.get(HOST_TAG) != host:
            continue
        pid = tags.get(PID_TAG, "")
        if pid.isdigit() and not pid_alive(int(pid)):
            store.client.set_tag(r.info.run_id, STALE_TAG, f"job (pid {pid} on {host}) gone; ended by a rerun")
            store.client.set_terminated(r.info.run_id, status="FAILED")
            failed.append(r.info.run_id)
    if failed:
        log.warning("marked %d stale RUNNING run(s) of %s as FAILED: %s", len(failed), model, ", ".join(failed))
    return failed
