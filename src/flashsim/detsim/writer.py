"""Stream chunks of contract columns into a ROOT file, atomically and byte-reproducibly.

uproot stamps files with the creation time (TDatime in the header, directories and keys) and random UUIDs.
:func:`write_root` fixes both (a constant timestamp and a UUID derived from a caller-given key), and writes into
a temporary directory under the final file name (ROOT stores the file name inside the file), renaming into place
only when every chunk was written: same inputs give a byte-identical file, and a failure leaves no output.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import os
import shutil
import tempfile
import types
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from flashsim.errors import ConfigError
from flashsim.io.contract import Sample

FIXED_TIME = _dt.datetime(2025, 1, 1, 0, 0, 0)  # the timestamp written into generated files
COMPRESSION = ("none", "lz4", "zlib", "zstd")
MIN_SAVING = 0.65  # a branch is stored uncompressed when compressing its first basket saves less than this
_PROBE_ENTRIES = 65536  # entries of the first chunk used to decide


_UPROOT_WRITING_MODULES = ("uproot.writing._cascade", "uproot.writing._cascadentuple",
                           "uproot.writing._cascadetree", "uproot.writing.writable")


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):  # same signature as datetime.now
        return FIXED_TIME


@contextlib.contextmanager
def _fixed_clock() -> Iterator[None]:
    """Make uproot's writing modules see a constant ``datetime.datetime.now()`` while writing (a test checks
    that files come out byte-identical, so a new uproot that stamps time elsewhere is caught)."""
    fake = types.SimpleNamespace(datetime=_FixedDatetime, timezone=_dt.timezone, timedelta=_dt.timedelta)
    mods = []
    for name in _UPROOT_WRITING_MODULES:
        try:
            m = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(m, "datetime", None) is _dt:
            mods.append(m)
    for m in mods:
        m.datetime = fake
    try:
        yield
    finally:
        for m in mods:
            m.datetime = _dt


def compression_codec(name: str, level: int = 1):
    """uproot compression object for a params name (``none``, ``lz4``, ``zlib``, ``zstd``)."""
    import uproot

    if name not in COMPRESSION:
        raise ConfigError(f"detsim.compression: unknown codec {name!r} (choose from {', '.join(COMPRESSION)})")
    return None if name == "none" else {"lz4": uproot.LZ4, "zlib": uproot.ZLIB, "zstd": uproot.ZSTD}[name](level)


def deterministic_uuid(key: str) -> uuid.UUID:
    return uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4)


@contextlib.contextmanager
def _atomic_same_name(path: Path) -> Iterator[Path]:
    """A temporary path with the final file name (in a hidden sibling directory), renamed into place on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmpdir / path.name
        os.replace(tmpdir / path.name, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _is_jagged(a) -> bool:
    return not isinstance(a, np.ndarray)


def _group_jagged(names: list[str], sample: Sample) -> dict[str, list[str]]:
    """Jagged contract columns grouped by prefix (``photon_x`` -> ``photon``): they share one counter branch."""
    groups: dict[str, list[str]] = {}
    for name in names:
        if sample.column(name).jagged:
            groups.setdefault(name.split("_", 1)[0], []).append(name)
    return groups


def _counter_column(prefix: str, sample: Sample) -> str | None:
    """The contract's count column for a jagged group (``photon`` -> ``nPhotons``), if it has one."""
    name = f"n{prefix[:1].upper()}{prefix[1:]}s"
    names = sample.names()
    return name if name in names and not sample.column(name).jagged else None


class _Layout:
    """How contract columns map onto file branches: renames, dtypes, jagged groups and their counters."""

    def __init__(self, sample: Sample, names: list[str], rename: Mapping[str, str]):
        self.sample = sample
        self.names = names
        self.rename = {n: rename.get(n, n) for n in sample.names()}
        self.groups = _group_jagged(names, sample)
        grouped = {n for g in self.groups.values() for n in g}
        self.counters = {p: _counter_column(p, sample) for p in self.groups}
        counter_names = {c for c in self.counters.values() if c}
        self.flat = [n for n in names if n not in grouped and n not in counter_names]
        self.field = {n: n.split("_", 1)[1] for n in grouped}

    def branch_types(self) -> dict:
        """uproot ``mktree`` types, in contract order (a jagged group at its first member's place)."""
        types_: dict = {}
        for n in self.names:
            if n in self.flat:
                types_[self.rename[n]] = np.dtype(self.sample.column(n).dtype)
            for prefix, members in self.groups.items():
                if n == members[0]:
                    fields = ", ".join(f"{self.field[m]}: {self.sample.column(m).base_dtype}" for m in members)
                    types_[prefix] = f"var * {{{fields}}}"
        return types_

    def counter_name(self, prefix: str) -> str:
        c = self.counters.get(prefix)
        return self.rename[c] if c else f"n{prefix}"

    def field_name(self, outer: str, inner: str) -> str:
        return self.rename.get(f"{outer}_{inner}", f"{outer}_{inner}")

    def convert(self, chunk: Mapping) -> dict:
        import awkward as ak

        out: dict = {}
        for n in self.flat:
            out[self.rename[n]] = np.ascontiguousarray(chunk[n], dtype=self.sample.column(n).dtype)
        for prefix, members in self.groups.items():
            arrays = {self.field[m]: ak.values_astype(chunk[m], np.dtype(self.sample.column(m).base_dtype))
                      for m in members}
            rec = ak.zip(arrays, depth_limit=2)
            c = self.counters.get(prefix)
            if c is not None and not np.array_equal(np.asarray(ak.num(rec, axis=1)), np.asarray(chunk[c])):
                raise ValueError(f"column {c} does not equal the lengths of the {prefix}_* lists")
            out[prefix] = rec
        return out


def _branch_compression(ttree, data: Mapping, codec, min_saving: float) -> None:
    """Per-branch codecs: flat branches whose first basket would shrink by less than ``min_saving`` (nearly
    incompressible floats) are stored uncompressed, which saves most of the compression time for nothing."""
    if codec is None or min_saving <= 0:
        return
    for name, array in data.items():
        if isinstance(array, np.ndarray):
            raw = np.ascontiguousarray(array[:_PROBE_ENTRIES].astype(array.dtype.newbyteorder(">"))).tobytes()
            if raw and len(codec.compress(raw)) > (1.0 - min_saving) * len(raw):
                ttree[name].compression = None


def write_root(path: str | Path, chunks: Iterable[Mapping], sample: Sample, *, tree: str | None = None,
               rename: Mapping[str, str] | None = None, compression: str = "lz4", level: int = 1,
               min_saving: float = MIN_SAVING, uuid_key: str = "flashsim", progress=None) -> int:
    """Write ``chunks`` (dicts of contract columns) as tree ``tree`` of a new ROOT file at ``path``.

    ``rename`` maps contract names to branch names; ``progress`` is called with each chunk's entry count.
    Branches that compress by less than ``min_saving`` are stored uncompressed (0 disables this).
    Returns the number of entries written.
    """
    import uproot

    path = Path(path)
    tree = tree or sample.tree
    codec = compression_codec(compression, level)
    fixed_uuid = deterministic_uuid(uuid_key)
    total = 0
    with _atomic_same_name(path) as tmp, _fixed_clock():
        f = uproot.recreate(tmp, compression=codec, uuid_function=lambda: fixed_uuid)
        try:
            ttree = None
            layout = None
            for chunk in chunks:
                if layout is None:
                    missing = [n for n in sample.names(optional=False) if n not in chunk]
                    unknown = [n for n in chunk if n not in sample.names()]
                    if missing or unknown:
                        raise ValueError(f"chunk does not match the {sample.kind} contract: missing {missing}, "
                                         f"unknown {unknown}")
                    layout = _Layout(sample, [n for n in sample.names() if n in chunk], rename or {})
                    ttree = f.mktree(tree, layout.branch_types(), counter_name=layout.counter_name,
                                     field_name=layout.field_name, title=sample.doc[:80])
                    data = layout.convert(chunk)
                    _branch_compression(ttree, data, codec, min_saving)
                else:
                    data = layout.convert(chunk)
                n = len(next(iter(data.values())))
                ttree.extend(data)
                total += n
                if progress is not None:
                    progress(n)
            if layout is None:
                raise ValueError("no chunks to write")
        finally:
            f.close()
    return total
