"""Small contract-conforming ROOT files written directly with uproot, for the ingestion tests.

Independent of ``flashsim.detsim``: values are plain random numbers of the right dtype and shape, with NaN
exactly where the contract says a quantity does not exist ("NaN if type 0", "NaN if isMuon == 0").
Jagged contract branches ``<group>_<field>`` are written as one uproot record per group (``photon_x``,
``photon_E``, ... with the counter ``nphoton``), as an ntuple would hold them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from flashsim.io.contract import SAMPLES

Columns = dict[str, Any]


def _ints(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name.endswith("type"):
        return rng.choice([0, 3, 4, 5], size=n, p=[0.3, 0.5, 0.1, 0.1])
    if name.endswith(("isMuon", "acceptance", "MuonUnbiased", "isGhost", "is_signal")):
        return rng.integers(0, 2, n)
    if name.endswith("charge"):
        return rng.choice([-1, 1], size=n)
    if name in ("mcID", "mother_ID"):
        return rng.choice([11, -13, 211, -321, 2212], size=n)
    return rng.integers(1, 200, n)


def make_columns(kind: str, n: int, *, seed: int = 0, first_event: int = 0) -> Columns:
    """``n`` entries of contract kind ``kind`` as {contract name: numpy array or awkward list array}."""
    sample = SAMPLES[kind]
    rng = np.random.default_rng(seed)
    cols: Columns = {}
    per_event = kind == "ecal"
    for c in sample.columns:
        dtype = np.dtype(c.base_dtype)
        if c.name == "evtNumber":
            if per_event:
                values = np.arange(n)
            else:  # 1-8 entries per event, like particles of one collision
                values = np.repeat(np.arange(n), rng.integers(1, 9, n))[:n]
            cols[c.name] = (values + first_event).astype(dtype)
        elif c.name == sample.weight:
            cols[c.name] = rng.normal(0.7, 0.6, n).astype(dtype)  # sWeight-like: some negative, positive sum
        elif c.jagged:
            continue
        elif dtype.kind == "f":
            values = rng.normal(10.0, 3.0, n)
            r = c.range  # stay inside the contract's physical range
            if r is not None and r.hi - r.lo <= 100:
                values = rng.uniform(r.lo, r.hi, n) if not r.lo_open else r.hi - rng.uniform(0, r.hi - r.lo, n)
            elif r is not None and r.hi <= 0:
                values = -np.abs(values)
            elif r is not None and r.lo >= 0:
                values = np.abs(values) + 1e-3
            cols[c.name] = values.astype(dtype)
        else:
            cols[c.name] = _ints(c.name, n, rng).astype(dtype)
    for c in sample.columns:  # NaN where the contract says the value does not exist
        if c.base_dtype.startswith("float") and not c.jagged:
            if "NaN if type 0" in c.doc:
                cols[c.name][cols["type"] == 0] = np.nan
            if "NaN if isMuon == 0" in c.doc:
                flag = next(k for k in cols if k.endswith("isMuon"))
                cols[c.name][cols[flag] == 0] = np.nan
    groups: dict[str, np.ndarray] = {}
    for c in sample.columns:
        if not c.jagged:
            continue
        group = c.name.split("_")[0]
        counts = groups.setdefault(group, rng.poisson(4.0, n))
        flat = rng.normal(100.0, 30.0, int(counts.sum())).astype(c.base_dtype)
        cols[c.name] = ak.unflatten(flat, counts)
    return cols


def write_root(path: str | Path, columns: Columns, tree: str, *, rename: dict[str, str] | None = None,
               compression: Any = None, chunks: int = 2, loose: tuple[str, ...] = ()) -> Path:
    """Write ``columns`` as a TTree ``tree``: flat arrays as branches, jagged ones grouped into records
    (except those in ``loose``: standalone jagged branches with their own counter)."""
    rename = rename or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    branches: dict[str, Any] = {}
    records: dict[str, dict[str, Any]] = {}
    for name, values in columns.items():
        if isinstance(values, ak.Array) and name not in loose:
            group, fld = name.split("_", 1)
            records.setdefault(group, {})[fld] = values
        else:
            branches[rename.get(name, name)] = values
    for group, fields in records.items():
        branches[group] = ak.zip(fields)
    types = {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in branches.items()}
    n = len(next(iter(branches.values())))
    with uproot.recreate(path, compression=compression or uproot.ZLIB(1)) as f:
        t = f.mktree(tree, types)
        bounds = np.linspace(0, n, chunks + 1).astype(int)
        for a, b in itertools.pairwise(bounds):
            if b > a:
                t.extend({k: v[a:b] for k, v in branches.items()})
    return path


def write_sample(path: str | Path, kind: str, n: int = 2000, *, seed: int = 0, tree: str | None = None,
                 rename: dict[str, str] | None = None, modify: Callable[[Columns], None] | None = None,
                 first_event: int = 0, chunks: int = 2, loose: tuple[str, ...] = ()) -> Path:
    """A contract-conforming file of ``kind`` (``modify`` may break it on purpose before writing)."""
    cols = make_columns(kind, n, seed=seed, first_event=first_event)
    if modify is not None:
        modify(cols)
    return write_root(path, cols, tree or SAMPLES[kind].tree, rename=rename, chunks=chunks, loose=loose)
