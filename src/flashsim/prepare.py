"""``flashsim prepare SAMPLE --outdir DIR``: ROOT inputs -> ``{train,val,test}.parquet``, split by event.

Every file is opened and its schema checked before any data is read; the data are then streamed in chunks
(``prepare.step_size`` entries), checked (non-finite fractions, weights) and written to temporary Parquet files
that replace the outputs only when every file passed. LHCb's undefined-value sentinels become NaN
(counts logged per branch), and out-of-range values beyond ``prepare.max_out_of_range_fraction`` stop it.
Any error leaves no partial output and exits non-zero.

The split is per event: entry -> hash(seed, file name, evtNumber) -> uniform u in [0, 1) -> train if
u < f_train, val if u < f_train + f_val, else test. It depends neither on the chunking nor on where the file is
stored (a local copy and the same file over root:// give the same split), and all entries of one event of one
file land in the same set. Columns are the contract names in the contract dtypes (floats float32, weights
float64); jagged branches become Arrow list columns.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from flashsim.errors import ConfigError

HELP = "ingest a sample's ROOT inputs (paths, globs, root://) into train/val/test Parquet, split by event"
SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sample", help="sample name (a key of inputs in params.yaml)")
    p.add_argument("--outdir", required=True, type=Path, help="directory for train/val/test.parquet")
    p.add_argument("--params", type=Path, default=None, help="params file (default: the repository's params.yaml)")


def run(args: argparse.Namespace) -> int:
    from flashsim.config import load_params

    params = load_params(args.params)
    counts = prepare(params, args.sample, args.outdir)
    log.info("%s: %s -> %s", args.sample, ", ".join(f"{k} {v}" for k, v in counts.items()), args.outdir)
    return 0


# ------------------------------------------------------------------------------------------------ split
def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-avalanching 64-bit hash (vectorised, wraps on overflow)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def file_salt(seed: int, path: str) -> np.uint64:
    """A 64-bit salt from the seed and the file's base name (so local and root:// copies split alike)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return np.uint64(int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little"))


def split_fractions(split: dict[str, float]) -> np.ndarray:
    """Cumulative boundaries [f_train, f_train + f_val] of the split; fractions must sum to 1."""
    f = np.array([split[k] for k in SPLITS], dtype=np.float64)
    if abs(f.sum() - 1.0) > 1e-6:
        raise ConfigError(f"prepare.split: fractions {dict(zip(SPLITS, f.tolist(), strict=True))} sum to "
                          f"{f.sum():g}, not 1")
    return np.cumsum(f)[:2]


def assign_split(evt: np.ndarray, salt: np.uint64, bounds: np.ndarray) -> np.ndarray:
    """Index 0/1/2 (train/val/test) per entry from its event number and the file's salt."""
    h = _mix64(np.asarray(evt).astype(np.int64).view(np.uint64) ^ salt)
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(bounds, u, side="right").astype(np.int8)


# ------------------------------------------------------------------------------------------------ arrow
def arrow_schema(columns: list, metadata: dict[str, Any]) -> Any:
    import pyarrow as pa

    fields = []
    for c in columns:
        t = pa.from_numpy_dtype(np.dtype(c.base_dtype))
        fields.append(pa.field(c.name, pa.list_(pa.field("item", t, nullable=False)) if c.jagged else t,
                               nullable=False))
    return pa.schema(fields, metadata={"flashsim": json.dumps(metadata, sort_keys=True)})


def to_arrow(values: Any, field: Any) -> Any:
    """A numpy (flat) or awkward (jagged) column as an Arrow array of ``field``'s type."""
    import awkward as ak
    import pyarrow as pa

    if isinstance(values, np.ndarray):
        return pa.array(values, type=field.type)
    packed = ak.to_packed(values)
    layout = packed.layout
    offsets = np.asarray(layout.offsets, dtype=np.int64)
    content = np.asarray(layout.content.data if hasattr(layout.content, "data") else ak.to_numpy(layout.content))
    return pa.ListArray.from_arrays(pa.array((offsets - offsets[0]).astype(np.int32)),
                                    pa.array(content, type=field.type.value_type), type=field.type)


# ------------------------------------------------------------------------------------------------ prepare
def prepare(params: dict, sample: str, outdir: str | Path, *, progress: bool = True) -> dict[str, int]:
    """Prepare ``sample`` into ``outdir/{train,val,test}.parquet``; returns entries per split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flashsim.io.atomic import atomic_outputs
    from flashsim.io.readers import iterate_sample, sample_spec, validate_inputs
    from flashsim.progress import Progress

    cfg = params["prepare"]
    bounds = split_fractions(cfg["split"])
    seed = int(params["seed"])
    spec = sample_spec(params, sample)
    files, columns = validate_inputs(spec)
    total = sum(f.entries for f in files)
    log.info("%s (%s): %d file(s), %d entries, tree %s", sample, spec.kind, len(files), total, spec.tree)
    meta = {"sample": sample, "kind": spec.kind, "tree": spec.tree, "files": [f.path for f in files],
            "branches": spec.mapping, "seed": seed, "split": cfg["split"]}
    outdir = Path(outdir)
    counts = dict.fromkeys(SPLITS, 0)
    with atomic_outputs([outdir / f"{s}.parquet" for s in SPLITS]) as tmps:
        writers: list[Any] = []
        # dictionary encoding pays for small-integer columns only (slow and useless on float measurements)
        dict_cols = [c.name for c in columns if not c.jagged and np.dtype(c.base_dtype).kind in "iu"]
        try:
            for s, tmp in zip(SPLITS, tmps, strict=True):
                schema = arrow_schema(columns, {**meta, "split_name": s})
                writers.append(pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=dict_cols))
            salts: dict[str, np.uint64] = {}
            with Progress(total, f"prepare {sample}", unit="entries", enabled=progress) as bar:
                for f, chunk in iterate_sample(spec, files, columns, step_size=int(cfg["step_size"]),
                                               max_nonfinite_fraction=float(cfg["max_nonfinite_fraction"]),
                                               max_out_of_range_fraction=float(cfg["max_out_of_range_fraction"])):
                    salt = salts.setdefault(f.path, file_salt(seed, f.path))
                    which = assign_split(chunk["evtNumber"], salt, bounds)
                    for i, w in enumerate(writers):
                        mask = which == i
                        n = int(mask.sum())
                        if n:
                            arrays = [to_arrow(chunk[c.name][mask], fld) for c, fld in
                                      zip(columns, w.schema, strict=True)]
                            w.write_table(pa.Table.from_arrays(arrays, schema=w.schema))
                        counts[SPLITS[i]] += n
                    bar.update(len(which), {"train": counts["train"], "val": counts["val"]})
        finally:
            for w in writers:
                w.close()
    return counts
