"""The family interface and its shared parts (data access, parity rows, default validation per task).

A family module ``flashsim.models.<family>`` defines ``class Family(base.Family)`` implementing::

    fit(ctx) -> dict                       # train on the prepared train/val splits, save to spec.train_dir;
                                           # ctx: the job's run (flashsim.mlops.runs.Run: log_metrics, set_tags)
    load() -> None                         # load the saved native model
    predict(x, noise=None) -> ndarray      # native prediction, physical units (classifiers: probabilities [N, C])
    to_onnx(path) -> None                  # write the ONNX graph (x[, noise] -> y), preprocessing inside

and may override ``derive`` (derived columns), ``parity_rows`` (extra rows for the parity check, e.g. tree
thresholds), ``validate`` (metrics and plots; defaults exist for ``task`` classifier and generator),
``output_names``/``output_units`` and ``SCHEMA``/``DEFAULTS`` (its hyperparameters; unknown keys are errors).

Common keys of every model entry (besides family, sample, gates): see ``COMMON_SCHEMA`` below.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flashsim.errors import ConfigError, InputError
from flashsim.models import ModelSpec

log = logging.getLogger(__name__)

COMMON_SCHEMA: dict[str, Any] = {
    "species": {"type": "string", "description": "set by the species expansion"},
    "derive": {"type": "string", "description": "name of the function adding derived columns (DERIVES)"},
    "selection": {"type": "string", "description": "pandas query selecting the rows the model is trained on"},
    "features": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                 "description": "input columns, in the order of the ONNX input x"},
    "weight": {"type": ["string", "null"], "default": None, "description": "per-row weight column (sWeights)"},
    "units": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
              "description": "units of derived columns (contract columns have theirs)"},
    "max_rows": {"type": ["integer", "null"], "minimum": 100, "default": None,
                 "description": "use at most this many training rows"},
    "validation_rows": {"type": "integer", "minimum": 100, "default": 100000,
                        "description": "held-out (test split) rows used by validate"},
    "bins": {"type": "object", "default": {}, "additionalProperties": False,
             "properties": {"p": {"type": "string", "default": "p"}, "eta": {"type": "string", "default": "eta"},
                            "n_p": {"type": "integer", "minimum": 1, "default": 4},
                            "n_eta": {"type": "integer", "minimum": 1, "default": 3}}},
    "oracle": {"type": "string",
               "description": "name of a truth hook (flashsim.validation.truth.ORACLES): frame -> true probabilities"},
    "parity": {"type": "object", "default": {}, "additionalProperties": False,
               "properties": {"atol": {"type": "number", "minimum": 0, "default": 1e-4},
                              "rtol": {"type": "number", "minimum": 0, "default": 1e-4},
                              "rows": {"type": "integer", "minimum": 10, "default": 5000}}},
    "threads": {"type": "integer", "minimum": 0, "default": 1,
                "description": "CPU threads of the model's jobs, 0: all allotted cores (flashsim.threads; "
                               "params.yaml default {demo: 1, full: 0})"},
    "device": {"type": "string", "default": "auto", "description": "auto (CUDA when present), cpu, cuda:N"},
}


# derive name (``derive:`` of a model entry) -> 'module:function' adding derived columns to a prepared frame
DERIVES: dict[str, str] = {
    "tracking": "flashsim.models.tracking:derive",
}


def derive_function(name: str, where: str = "derive"):
    """The function registered as ``name`` in :data:`DERIVES`; ConfigError naming ``where`` and the known names."""
    if name not in DERIVES:
        raise ConfigError(f"{where}: unknown derive {name!r}; known: {', '.join(sorted(DERIVES))}")
    mod, _, attr = DERIVES[name].partition(":")
    return getattr(importlib.import_module(mod), attr)


class Family:
    task: ClassVar[str] = "classifier"  # or "generator"
    SCHEMA: ClassVar[dict[str, Any]] = {}
    REQUIRED: ClassVar[tuple[str, ...]] = ("features",)
    noise_dim: int = 0

    def __init__(self, spec: ModelSpec) -> None:
        from flashsim.config import check_entry

        self.spec = spec
        self.cfg = check_entry(spec.name, spec.cfg, {**COMMON_SCHEMA, **self.SCHEMA}, list(self.REQUIRED))

    # ------------------------------------------------------------ data
    def derive(self, df):
        """Add derived columns (``derive: NAME`` in params, see :data:`DERIVES`); families may override."""
        name = self.cfg.get("derive")
        return derive_function(name, f"models/{self.spec.name}/derive")(df) if name else df

    def frame(self, split: str, max_rows: int | None = None):
        """The prepared ``split`` as a pandas frame, derived columns added, selection applied."""
        import pandas as pd
        import pyarrow.parquet as pq

        path = self.spec.prepared(split)
        if not path.exists():
            raise InputError(f"prepared data missing (run `flashsim prepare {self.spec.sample}`)", file=str(path))
        table = pq.read_table(path)
        df: pd.DataFrame = table.to_pandas()
        meta = json.loads((table.schema.metadata or {}).get(b"flashsim", b"{}"))
        df = self.derive(df)
        if sel := self.cfg.get("selection"):
            try:
                df = df.query(sel)
            except Exception as err:
                raise ConfigError(f"models/{self.spec.name}/selection {sel!r}: {err}") from err
        df.attrs["source"] = str(path)  # named by the errors about its contents
        df.attrs["root"] = {k: meta.get(k) for k in ("files", "tree", "branches")}
        df = self.drop_undefined(df)
        if max_rows is not None and len(df) > max_rows:
            df = df.iloc[:max_rows]
        attrs = dict(df.attrs)
        df = df.reset_index(drop=True)
        df.attrs.update(attrs)
        return df

    def data_columns(self) -> list[str]:
        """The columns the model reads, weight aside (any non-finite weight is an error, as in ``prepare``):
        features, targets and label (as configured)."""
        cols = list(self.cfg.get("features") or []) + list(self.cfg.get("targets") or [])
        cols += [self.cfg["label"]] if self.cfg.get("label") else []
        return list(dict.fromkeys(cols))

    def drop_undefined(self, df):
        """Drop the rows where a column the model reads is NaN or inf (undefined, e.g. an LHCb sentinel mapped by
        ``prepare``), under the same tolerance as ``prepare`` (``prepare.max_nonfinite_fraction``); above it, an
        InputError naming the sample's ROOT sources."""
        cols = [c for c in self.data_columns() if c in df.columns and np.issubdtype(df[c].dtype, np.number)]
        if not cols or not len(df):
            return df
        values = df[cols].to_numpy(np.float64)
        bad = ~np.isfinite(values)
        rows = bad.any(axis=1)
        n = int(rows.sum())
        if not n:
            return df
        limit = float((self.spec.params.get("prepare") or {}).get("max_nonfinite_fraction", 0.02))
        worst = int(np.argmax(bad.sum(axis=0)))
        if n > limit * len(df):
            raise self.data_error(df, f"{self.spec.name}: {n} of {len(df)} rows ({n / len(df):.2%}) have NaN or "
                                  f"inf in the columns the model reads, above prepare.max_nonfinite_fraction = "
                                  f"{limit:g}", cols[worst])
        log.info("%s: %d of %d rows with NaN/inf in %s dropped (within prepare.max_nonfinite_fraction)",
                 self.spec.name, n, len(df), ", ".join(c for c, b in zip(cols, bad.any(0), strict=True) if b))
        return df[~rows]

    def source(self, df) -> str:
        """The prepared file ``df`` was read from (the training split where unknown)."""
        return str(df.attrs.get("source") or self.spec.prepared("train"))

    def data_error(self, df, message: str, column: str | None = None) -> InputError:
        """An InputError about the data of ``df`` naming the sample's ROOT sources, tree and file branch (the
        prepared Parquet file in the message)."""
        root = df.attrs.get("root") or {}
        files = root.get("files") or []
        branch = (root.get("branches") or {}).get(column, column) if column else None
        if branch and branch != column:
            message = f"{message} [column '{column}']"
        where = ", ".join(files) if files else self.source(df)
        return InputError(f"{message} (prepared data: {self.source(df)})", file=where, tree=root.get("tree"),
                          branch=branch)

    def _columns(self, df, names: list[str], what: str) -> np.ndarray:
        missing = [n for n in names if n not in df.columns]
        if missing:
            raise self.data_error(df, f"{self.spec.name}: {what} column(s) missing from the prepared data",
                                  ", ".join(missing))
        return df[names].to_numpy(dtype=np.float32)

    @property
    def feature_names(self) -> list[str]:
        return list(self.cfg["features"])

    def features(self, df) -> np.ndarray:
        x = self._columns(df, self.feature_names, "feature")
        bad = ~np.isfinite(x)
        if bad.any():
            j = int(np.argwhere(bad.any(0))[0, 0])
            raise self.data_error(df, f"{self.spec.name}: {int(bad.sum())} non-finite feature values",
                                  self.feature_names[j])
        return x

    def weights(self, df) -> np.ndarray | None:
        """The ``weight`` column (None without one): finite, with a positive total, else a clear InputError."""
        w = self.cfg.get("weight")
        if not w:
            return None
        values = self._columns(df, [w], "weight")[:, 0].astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise self.data_error(df, f"{int(bad.sum())} non-finite weights", w)
        total = float(np.sum(values))
        if not total > 0 or abs(total) < 1e-9 * max(float(np.sum(np.abs(values))), 1e-300):
            raise self.data_error(df, f"the weights sum to {total:.6g}: need a positive total (signal yield)", w)
        return values

    def training_weights(self, df, seen: list[np.ndarray]) -> np.ndarray | None:
        """Per-row weights for the training loss; ``seen`` are the arrays the loss depends on (features,
        targets). Default: :meth:`weights`; families may substitute e.g. regressed sWeights."""
        return self.weights(df)

    def unit(self, name: str) -> str:
        from flashsim.io.contract import SAMPLES

        if name in self.cfg.get("units", {}):
            return self.cfg["units"][name]
        if name in DERIVED_UNITS:
            return DERIVED_UNITS[name]
        for s in SAMPLES.values():
            for c in s.columns:
                if c.name == name:
                    return c.unit
        return "1"

    def io_inputs(self) -> list[dict]:
        return [{"name": "x", "shape": ["N", len(self.feature_names)], "dtype": "float32",
                 "columns": [{"name": n, "unit": self.unit(n)} for n in self.feature_names]}] + (
            [{"name": "noise", "shape": ["N", self.noise_dim], "dtype": "float32",
              "distribution": "standard normal"}] if self.noise_dim else [])

    def output_names(self) -> list[str]:
        raise NotImplementedError

    def output_units(self) -> list[str]:
        return [self.unit(n) for n in self.output_names()]

    def plot_variables(self, reference: np.ndarray, generated: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """The variables the report's histograms show (reference, generated, names, units); default: the
        outputs as they are. A family overrides it where another view reads better (covariance: log sigma and
        correlations)."""
        return reference, generated, self.output_names(), self.output_units()

    def io_outputs(self) -> list[dict]:
        names = self.output_names()
        return [{"name": "y", "shape": ["N", len(names)], "dtype": "float32",
                 "columns": [{"name": n, "unit": u} for n, u in zip(names, self.output_units(), strict=True)]}]

    def training_files(self) -> list[Path]:
        return [self.spec.prepared("train"), self.spec.prepared("val")]

    # ------------------------------------------------------------ model (family-specific)
    def fit(self, ctx) -> dict:
        raise NotImplementedError

    def load(self) -> None:
        raise NotImplementedError

    def predict(self, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def to_onnx(self, path: Path) -> None:
        raise NotImplementedError

    def parity(self, onnx_path: Path) -> dict:
        """Native vs onnxruntime on held-out rows plus ``parity_rows``; GateError above the tolerance.

        Families whose inputs are not rows (e.g. whole events) override this."""
        from flashsim.export import parity_check

        x = self.features(self.frame("test", self.cfg["parity"]["rows"]))
        x = np.vstack([x, self.parity_rows(x)]).astype(np.float32)
        noise = None
        if self.noise_dim:
            rng = np.random.default_rng(self.spec.seed + 3)
            noise = rng.standard_normal((len(x), self.noise_dim)).astype(np.float32)
        tol = self.cfg["parity"]
        return parity_check(self.predict, onnx_path, x, noise, atol=tol["atol"], rtol=tol["rtol"],
                            name=self.spec.name)

    def parity_rows(self, x: np.ndarray) -> np.ndarray:
        """Extra rows for the parity check (e.g. on tree thresholds); default: none."""
        return np.empty((0, x.shape[1]), dtype=np.float32)

    def training_summary(self) -> dict:
        p = self.spec.train_dir / "trained.json"
        return json.loads(p.read_text()) if p.exists() else {}

    # ------------------------------------------------------------ validation
    def validate(self, df, predict, report_dir: Path) -> tuple[dict, list[Path]]:
        """Metrics and plots on held-out rows; ``predict(x, noise)`` is the exported (ONNX) model."""
        from flashsim.validation import default as validate_default

        if self.task == "classifier":
            return validate_default.classifier(self, df, predict, report_dir)
        if self.task == "generator":
            return validate_default.generator(self, df, predict, report_dir)
        raise NotImplementedError(f"no default validation for task {self.task!r}")


DERIVED_UNITS: dict[str, str] = {}
"""Units of derived columns, filled by the modules that derive them (``DERIVED_UNITS.update(...)``)."""


class ClassifierMixin:
    """Label handling for classifiers: ``label`` column, ``classes`` (label values in class order)."""

    CLASSIFIER_SCHEMA: ClassVar[dict[str, Any]] = {
        "label": {"type": "string"},
        "classes": {"type": "array", "minItems": 2, "items": {"type": "number"}, "default": [0, 1]},
        "class_names": {"type": "array", "items": {"type": "string"}},
    }

    def labels(self, df) -> np.ndarray:
        col = self.cfg["label"]
        if col not in df.columns:
            raise self.data_error(df, f"{self.spec.name}: label column missing", col)
        values = df[col].to_numpy()
        classes = np.asarray(self.cfg["classes"])
        idx = np.full(len(values), -1)
        for i, c in enumerate(classes):
            idx[values == c] = i
        if (idx < 0).any():
            bad = np.unique(values[idx < 0])[:5]
            raise self.data_error(df, f"{self.spec.name}: label values {bad.tolist()} not in classes "
                                  f"{classes.tolist()}", col)
        return idx

    @property
    def class_names(self) -> list[str]:
        return list(self.cfg.get("class_names") or [f"{self.cfg['label']}={c}" for c in self.cfg["classes"]])

    def output_names(self) -> list[str]:
        return [f"P({n})" for n in self.class_names]

    def output_units(self) -> list[str]:
        return ["1"] * len(self.class_names)

    def oracle(self, df) -> np.ndarray | None:
        """The true class probabilities [N, C] from the truth hook ``oracle: NAME`` (None without one)."""
        from flashsim.validation.truth import oracle

        name = self.cfg.get("oracle")
        if not name:
            return None
        p = np.asarray(oracle(name, f"models/{self.spec.name}/oracle")(df), dtype=np.float64)
        return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
