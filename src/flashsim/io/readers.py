"""Read input ROOT files (paths, globs or ``root://`` URLs) against the data contract, in chunks.

``params.yaml`` says where a sample lives: ``inputs.<sample>.files`` (paths, globs, ``root://host//path`` URLs,
globs included), ``inputs.<sample>.tree`` (default: the contract's tree for the sample's kind) and
``inputs.<sample>.branches`` (contract name -> branch name in the files). The kind comes from
``inputs.<sample>.kind`` or ``detsim.samples.<sample>.kind``. The tree may be a TTree or an RNTuple, and its
name a path in the file (``Dir/DecayTree``). ``inputs.<sample>.sentinels`` (contract name -> values) overrides
the contract's undefined-value sentinels of a branch (``[]``: none); they are mapped to NaN as the data are read
and the counts logged per file and branch. ``root://`` URLs are opened with ``prepare.xrootd_timeout`` seconds
for connecting and for each request.

Every problem with the data raises ONE :class:`~flashsim.errors.InputError` naming the file, the tree and the
(file's) branch:

* the file does not exist / no file matches a glob; it is not a ROOT file, is corrupt or truncated (header size
  vs. bytes on disk, unreadable baskets);
* the tree is missing, is not a TTree, or has no entries;
* a required contract branch is missing; its type cannot be cast to the contract dtype without changing kind
  (float -> int, strings, objects, fixed-size arrays) or it is flat where the contract wants a jagged (per-event
  list) branch or the other way round; integer values overflow the contract's integer type; jagged branches of
  one group (``photon_*``, ``cluster_*``) disagree on their list lengths;
* non-finite values (NaN, +-inf) above ``prepare.max_nonfinite_fraction`` of the entries where a float branch must
  be defined (see :data:`DEFINED_WHERE`: reconstructed quantities only where ``type != 0``, muon LLs only where
  ``isMuon != 0``, everything else everywhere);
* the weight branch (e.g. ``probe_sWeight``) has any non-finite value, is all zero, or sums to zero or less.
  Negative weights are legal (sWeights);
* values outside the branch's physical range (:attr:`flashsim.io.contract.Column.range`) above
  ``prepare.max_out_of_range_fraction`` of the branch's finite values (any, for the weight branch); the few
  tolerated are reported and set to NaN (float branches);
* values equal to an LHCb sentinel (-1000, -999, -9999) above that fraction in a float branch for which no
  sentinel is configured;
* the XRootD server does not answer within ``prepare.xrootd_timeout``.

Optional (truth-only) contract branches are read when every file has them and dropped otherwise.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flashsim.errors import ConfigError, InputError
from flashsim.io.contract import LHCB_SENTINELS, PID_RESPONSE, SAMPLES, STATE, Column, Sample

log = logging.getLogger(__name__)

GLOB_CHARS = "*?["

# Float branches that the contract allows to be NaN, and where they must be defined instead:
# kind -> {contract branch: integer branches that must all be non-zero for the value to exist}.
# Every other float branch must be defined for every entry. A test keeps this table in sync with the contract's
# "NaN if ..." documentation.
_RECO_DEFINED = (
    [f"{s}_ClosestToBeam" for s in STATE] + ["p", "chi2PerDoF", "nDoF", "ghostProb"]
    + [f"cov_ClosestToBeam_{i}_{j}" for i in range(5) for j in range(i, 5)]
)
_MUON_LL = ("MuonMuLL", "MuonBgLL")
DEFINED_WHERE: dict[str, dict[str, tuple[str, ...]]] = {
    "tracking": {c: ("type",) for c in _RECO_DEFINED},
    "signal": {
        **{c: ("type",) for c in _RECO_DEFINED},
        # the PID response exists only for reconstructed tracks; the muon LLs only with isMuon
        **{c.name: ("type",) for c in PID_RESPONSE if c.dtype == "float32"},
        **{c: ("type", "isMuon") for c in _MUON_LL},
    },
    "pid_calib": {f"probe_Brunel_{c}": ("probe_Brunel_isMuon",) for c in _MUON_LL},
    "ecal": {},
    "ghost": {},
}


# ------------------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class SampleSpec:
    """Where and how to read one sample: its contract, tree, files and branch mapping."""

    name: str
    kind: str
    tree: str
    files: tuple[str, ...]  # as configured: paths, globs, root:// URLs
    mapping: dict[str, str] = field(default_factory=dict)  # contract name -> file branch name (only differing)
    sentinel_overrides: dict[str, tuple[float, ...]] = field(default_factory=dict)  # contract name -> values
    timeout: float = 30.0  # seconds, XRootD connect and request timeout

    @property
    def contract(self) -> Sample:
        return SAMPLES[self.kind]

    def branch(self, name: str) -> str:
        """The file's branch name for contract branch ``name``."""
        return self.mapping.get(name, name)

    def sentinels(self, col: Column) -> tuple[float, ...]:
        """The values of ``col`` that mean "undefined" in these files (override, else the contract's)."""
        return self.sentinel_overrides.get(col.name, col.sentinels)

    def error(self, message: str, path: str, name: str | None = None) -> InputError:
        """An InputError naming ``path``, the tree and the file's branch for contract branch ``name``."""
        if name is None:
            return InputError(message, file=path, tree=self.tree)
        branch = self.branch(name)
        if branch != name:
            message = f"{message} [contract branch '{name}']"
        return InputError(message, file=path, tree=self.tree, branch=branch)


def sample_kind(params: dict, sample: str) -> str:
    """The contract kind of ``sample``: ``inputs.<sample>.kind`` or ``detsim.samples.<sample>.kind``."""
    given = (params.get("inputs", {}).get(sample) or {}).get("kind")
    generated = (params.get("detsim", {}).get("samples", {}).get(sample) or {}).get("kind")
    if given and generated and given != generated:
        raise ConfigError(f"inputs.{sample}.kind is {given!r} but detsim.samples.{sample}.kind is {generated!r}")
    kind = given or generated
    if kind is None:
        raise ConfigError(f"sample {sample!r} has no kind: set inputs.{sample}.kind "
                          f"(one of {', '.join(SAMPLES)}) or add it to detsim.samples")
    if kind not in SAMPLES:
        raise ConfigError(f"sample {sample!r}: unknown kind {kind!r} (one of {', '.join(SAMPLES)})")
    return kind


def sample_spec(params: dict, sample: str) -> SampleSpec:
    """Build the :class:`SampleSpec` of ``sample`` from validated params."""
    inputs = params.get("inputs", {})
    if sample not in inputs:
        known = ", ".join(sorted(inputs)) or "none"
        raise ConfigError(f"no inputs.{sample} in params (configured samples: {known})")
    entry = inputs[sample]
    kind = sample_kind(params, sample)
    contract = SAMPLES[kind]
    mapping = dict(entry.get("branches") or {})
    names = contract.names()
    for name in mapping:
        if name not in names:
            near = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"inputs.{sample}.branches: {name!r} is not a branch of the {kind} contract{hint}")
    mapping = {k: v for k, v in mapping.items() if k != v}
    sentinels = {}
    for name, values in (entry.get("sentinels") or {}).items():
        if name not in names:
            near = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"inputs.{sample}.sentinels: {name!r} is not a branch of the {kind} contract{hint}")
        if np.dtype(contract.column(name).base_dtype).kind != "f":
            raise ConfigError(f"inputs.{sample}.sentinels: {name!r} is an integer branch (sentinels map to NaN, "
                              "floats only)")
        sentinels[name] = tuple(float(v) for v in values)
    timeout = float((params.get("prepare") or {}).get("xrootd_timeout", 30.0))
    return SampleSpec(sample, kind, entry.get("tree") or contract.tree, tuple(entry["files"]), mapping,
                      sentinels, timeout)


# ------------------------------------------------------------------------------------------------ file lists
def is_url(path: str) -> bool:
    return "://" in path


def expand_inputs(patterns: list[str] | tuple[str, ...], tree: str | None = None, timeout: float = 30.0) -> list[str]:
    """Expand paths, globs and ``root://`` URLs (globs allowed) into a sorted, de-duplicated file list."""
    out: list[str] = []
    for pattern in patterns:
        globbed = any(ch in pattern for ch in GLOB_CHARS)
        if is_url(pattern):
            matches = _expand_url(pattern, globbed, tree, timeout)
        elif globbed:
            matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            if not matches:
                raise InputError("no file matches this glob", file=pattern, tree=tree)
        else:
            path = os.path.expanduser(pattern)
            if not os.path.exists(path):
                raise InputError("file does not exist", file=pattern, tree=tree)
            if os.path.isdir(path):
                raise InputError("is a directory, not a ROOT file (use a glob such as DIR/*.root)",
                                 file=pattern, tree=tree)
            matches = [path]
        out += [m for m in matches if m not in out]
    return out


def _expand_url(url: str, globbed: bool, tree: str | None, timeout: float) -> list[str]:
    if not globbed:
        return [url]
    import fsspec

    xrootd_timeouts(timeout)
    try:
        fs, _, paths = fsspec.core.get_fs_token_paths(url, storage_options=_fs_options(timeout))
    except Exception as err:  # fsspec/XRootD raise many types; all mean "cannot list"
        if _no_answer(err):
            raise InputError(f"the XRootD server did not answer within {timeout:g} s (prepare.xrootd_timeout): "
                             f"{_short(err)}", file=url, tree=tree) from err
        raise InputError(f"cannot expand the glob: {err}", file=url, tree=tree) from err
    if not paths:
        raise InputError("no file matches this glob", file=url, tree=tree)
    return sorted(fs.unstrip_protocol(p) for p in paths)


def _fs_options(timeout: float) -> dict[str, Any]:
    return {"timeout": max(1, round(timeout))}


def _forget_listings(url: str, timeout: float) -> None:
    """Drop fsspec's cached directory listings for ``url``'s server: fsspec-xrootd answers size queries from
    them and fails on files created after the listing."""
    import fsspec

    with contextlib.suppress(Exception):
        fsspec.core.url_to_fs(url, **_fs_options(timeout))[0].invalidate_cache()
    with contextlib.suppress(Exception):
        fsspec.core.url_to_fs(url)[0].invalidate_cache()


# ------------------------------------------------------------------------------------------------ opening
def _root_header(path: str) -> tuple[int, int] | None:
    """(fEND, size on disk) of a local ROOT file, None if it is not one (checked by the caller)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 16 or head[:4] != b"root":
        return None
    version = struct.unpack(">i", head[4:8])[0]
    end = struct.unpack(">q", head[12:20])[0] if version >= 1000000 else struct.unpack(">i", head[12:16])[0]
    return end, size


def xrootd_timeouts(seconds: float) -> None:
    """Make the XRootD client give up on a server that does not answer after about ``seconds``: one connection
    attempt of that window (its defaults, 5 x 120 s, hang a job for ten minutes) and that request timeout."""
    t = max(1, round(seconds))
    for key, value in (("CONNECTIONWINDOW", t), ("CONNECTIONRETRY", 1), ("REQUESTTIMEOUT", t),
                       ("STREAMTIMEOUT", t), ("TIMEOUTRESOLUTION", 1)):
        os.environ[f"XRD_{key}"] = str(value)
    with contextlib.suppress(Exception):
        from XRootD.client import EnvPutInt

        for key, value in (("ConnectionWindow", t), ("ConnectionRetry", 1), ("RequestTimeout", t),
                           ("StreamTimeout", t), ("TimeoutResolution", 1)):
            EnvPutInt(key, value)


def _no_answer(err: Exception) -> bool:
    text = str(err).lower()
    return any(w in text for w in ("timeout", "timed out", "expired", "connection error", "connection refused",
                                   "unable to connect", "couldn't connect", "no route", "connection reset"))


def _open_url(path: str, spec: SampleSpec) -> Any:
    """``uproot.open`` of a ``root://`` URL with the configured timeouts; InputError if the server is silent."""
    import uproot

    xrootd_timeouts(spec.timeout)
    try:
        return uproot.open(path, timeout=max(1, round(spec.timeout)))
    except OSError as err:
        if _no_answer(err):
            raise InputError(f"the XRootD server did not answer within {spec.timeout:g} s "
                             f"(prepare.xrootd_timeout): {_short(err)}", file=path, tree=spec.tree) from err
        raise


def is_ntuple(obj: Any) -> bool:
    """True for a TTree or an RNTuple (uproot's two columnar tree types)."""
    import uproot

    return isinstance(obj, (uproot.behaviors.TTree.TTree, uproot.behaviors.RNTuple.RNTuple))


def open_tree(path: str, spec: SampleSpec) -> Any:
    """Open ``path`` and return its TTree or RNTuple ``spec.tree`` (a path such as ``Dir/Tree`` allowed); checks
    the file is whole and the tree non-empty."""
    import uproot

    tree = spec.tree
    if not is_url(path):
        try:
            header = _root_header(path)
        except OSError as err:
            raise InputError(f"cannot read: {err.strerror or err}", file=path, tree=tree) from err
        if header is None:
            raise InputError("not a ROOT file (no 'root' magic bytes): corrupt or wrong format", file=path, tree=tree)
        end, size = header
        if size < end:
            raise InputError(f"truncated file: {size} bytes on disk, the ROOT header says {end}",
                             file=path, tree=tree)
    if is_url(path):
        _forget_listings(path, spec.timeout)
    try:
        f = _open_url(path, spec) if is_url(path) else uproot.open(path)
    except InputError:
        raise
    except FileNotFoundError as err:
        raise InputError("file does not exist", file=path, tree=tree) from err
    except Exception as err:  # uproot raises many types on a damaged file
        if "no such file" in str(err).lower():  # XRootD: OSError "[3011] ... no such file or directory"
            raise InputError(f"file does not exist ({_short(err)})", file=path, tree=tree) from err
        raise InputError(f"cannot open as a ROOT file (corrupt or truncated?): {_short(err)}",
                         file=path, tree=tree) from err
    if is_url(path):
        try:
            size = f.file.source.num_bytes
        except Exception as err:
            raise InputError(f"cannot stat the file: {_short(err)}", file=path, tree=tree) from err
        if size is not None and size < f.file.fEND:
            raise InputError(f"truncated file: {size} bytes, the ROOT header says {f.file.fEND}",
                             file=path, tree=tree)
    try:
        obj = f[tree]
    except uproot.KeyInFileError as err:
        trees = [k.split(";")[0] for k, c in f.classnames().items() if c in ("TTree", "TNtuple", "ROOT::RNTuple")]
        has = f"the file has {', '.join(repr(t) for t in trees)}" if trees else "the file has no TTree or RNTuple"
        raise InputError(f"no such tree ({has}); set inputs.{spec.name}.tree", file=path, tree=tree) from err
    except Exception as err:
        raise InputError(f"cannot read the tree (corrupt file?): {_short(err)}", file=path, tree=tree) from err
    if not is_ntuple(obj):
        raise InputError(f"is a {type(obj).__name__}, not a TTree or an RNTuple", file=path, tree=tree)
    if obj.num_entries == 0:
        raise InputError("the tree is empty (0 entries)", file=path, tree=tree)
    return obj


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


# ------------------------------------------------------------------------------------------------ schema
def check_schema(ttree: Any, path: str, spec: SampleSpec) -> list[Column]:
    """Check required branches exist with castable types; return the contract columns to read from this file."""
    import uproot

    if isinstance(ttree, uproot.behaviors.RNTuple.RNTuple):
        present = set(ttree.keys())
    else:
        present = set(ttree.keys(recursive=True, full_paths=True)) | set(ttree.keys())
    cols = []
    for col in spec.contract.columns:
        name = spec.branch(col.name)
        if name not in present:
            if col.optional:
                continue
            near = difflib.get_close_matches(name, sorted(present), n=1)
            hint = f"; closest in file: '{near[0]}'" if near else ""
            what = f"contract branch '{col.name}' required" if name != col.name else "required"
            raise InputError(f"missing branch ({what} by the {spec.kind} contract){hint}; map the file's name "
                             f"with inputs.{spec.name}.branches", file=path, tree=spec.tree, branch=name)
        _check_type(ttree[name], col, path, spec)
        cols.append(col)
    return cols


def _field_dtype(field: Any, bad: Any) -> tuple[bool, np.dtype]:
    """(jagged, dtype) of an RNTuple field: a number or a list of numbers."""
    import awkward as ak

    try:
        form = field.to_akform()[0].contents[0]
    except Exception as err:
        raise bad(f"uproot cannot interpret it ({_short(err)})") from err
    jagged = isinstance(form, ak.forms.ListOffsetForm)
    inner = form.content if jagged else form
    if not isinstance(inner, ak.forms.NumpyForm) or inner.inner_shape:
        raise bad(f"stored as {field.typename}")
    return jagged, np.dtype(inner.primitive if inner.primitive != "bool" else "bool")


def _check_type(branch: Any, col: Column, path: str, spec: SampleSpec) -> None:
    import uproot
    from uproot.interpretation.jagged import AsJagged
    from uproot.interpretation.numerical import AsDtype

    def bad(why: str) -> InputError:
        return spec.error(f"wrong dtype: {why}; the contract wants {col.dtype}", path, col.name)

    if isinstance(branch, uproot.models.RNTuple.RField):
        jagged, src = _field_dtype(branch, bad)
    else:
        try:
            interp = branch.interpretation
        except Exception as err:
            raise bad(f"uproot cannot interpret it ({_short(err)})") from err
        jagged = isinstance(interp, AsJagged)
        inner = interp.content if jagged else interp
        if not isinstance(inner, AsDtype):
            raise bad(f"stored as {branch.typename or type(interp).__name__}")
        src = inner.to_dtype
        if src.shape:
            raise bad(f"fixed-size array {branch.typename}")
    if jagged != col.jagged:
        raise bad(f"{'jagged (a list per entry)' if jagged else 'flat (one value per entry)'} {branch.typename}")
    dst = np.dtype(col.base_dtype)
    if src.kind not in "biuf" or not np.can_cast(src, dst, casting="same_kind"):
        raise bad(f"stored as {branch.typename} ({src.name}), which does not cast to {dst.name}")


# ------------------------------------------------------------------------------------------------ data checks
@dataclass
class _FileChecks:
    """Per-file accumulators of the data checks (non-finite counts, weight sums)."""

    nonfinite: dict[str, list[int]] = field(default_factory=dict)  # branch -> [bad, where defined]
    mapped: dict[str, int] = field(default_factory=dict)  # branch -> sentinels mapped to NaN
    unmapped: dict[str, list[int]] = field(default_factory=dict)  # branch -> [LHCb sentinel values, entries]
    out: dict[str, list[float]] = field(default_factory=dict)  # branch -> [outside, finite, lowest, highest]
    w_sum: float = 0.0
    w_abs: float = 0.0
    w_bad: int = 0
    w_n: int = 0


def _as_numpy(arr: Any) -> np.ndarray:
    import awkward as ak

    return arr if isinstance(arr, np.ndarray) else ak.to_numpy(arr)


def _conventions(chunk: dict[str, Any], name: str, col: Column, spec: SampleSpec, checks: _FileChecks) -> None:
    """Map sentinels to NaN (flat float branches), count unconfigured LHCb sentinels and out-of-range values;
    out-of-range float values become NaN (refused later above the tolerated fraction)."""
    import awkward as ak

    arr = chunk[name]
    flat_float = not col.jagged and np.dtype(col.base_dtype).kind == "f"
    if flat_float:
        values = _as_numpy(arr)
        sentinels = spec.sentinels(col)
        if sentinels:
            hit = np.isin(values, np.asarray(sentinels, dtype=values.dtype))
            if hit.any():
                values = np.where(hit, np.asarray(np.nan, dtype=values.dtype), values)
                chunk[name] = values
                checks.mapped[name] = checks.mapped.get(name, 0) + int(hit.sum())
        elif name != spec.contract.weight:
            acc = checks.unmapped.setdefault(name, [0, 0])
            acc[0] += int(np.isin(values, np.asarray(LHCB_SENTINELS, dtype=values.dtype)).sum())
            acc[1] += len(values)
    else:
        values = _as_numpy(ak.flatten(arr, axis=None) if col.jagged else arr)
    rng = col.range
    if rng is None or not len(values):
        return
    outside = rng.outside(values)
    acc = checks.out.setdefault(name, [0, 0, np.inf, -np.inf])
    acc[1] += int(np.count_nonzero(np.isfinite(values))) if values.dtype.kind == "f" else len(values)
    n = int(outside.sum())
    if n:
        bad = values[outside].astype(np.float64)
        acc[0] += n
        acc[2], acc[3] = min(acc[2], float(bad.min())), max(acc[3], float(bad.max()))
        if flat_float and name != spec.contract.weight:
            chunk[name] = np.where(outside, np.asarray(np.nan, dtype=values.dtype), values)


def _check_chunk(chunk: dict[str, Any], spec: SampleSpec, checks: _FileChecks, path: str) -> None:
    import awkward as ak

    rules = DEFINED_WHERE.get(spec.kind, {})
    weight = spec.contract.weight
    groups: dict[str, tuple[str, Any]] = {}
    for name in list(chunk):
        col = spec.contract.column(name)
        _conventions(chunk, name, col, spec, checks)
        arr = chunk[name]
        if col.jagged:
            counts = ak.num(arr, axis=1)
            group = name.split("_")[0]
            if group in groups and not ak.all(counts == groups[group][1]):
                raise spec.error(f"list lengths differ from '{spec.branch(groups[group][0])}' in the same entries "
                                 "(jagged branches of one group must align)", path, name)
            groups.setdefault(group, (name, counts))
        if name == weight:
            w = _as_numpy(arr).astype(np.float64)
            finite = np.isfinite(w)
            checks.w_bad += int(np.count_nonzero(~finite))
            checks.w_n += len(w)
            checks.w_sum += float(w[finite].sum())
            checks.w_abs += float(np.abs(w[finite]).sum())
            continue
        if np.dtype(col.base_dtype).kind != "f":
            continue
        values = _as_numpy(ak.flatten(arr, axis=None) if col.jagged else arr)
        gate = rules.get(name)
        if gate:
            where = np.ones(len(values), dtype=bool)
            for g in gate:
                where &= _as_numpy(chunk[g]) != 0
            values = values[where]
        acc = checks.nonfinite.setdefault(name, [0, 0])
        acc[0] += int(np.count_nonzero(~np.isfinite(values)))
        acc[1] += len(values)


def _finish_conventions(checks: _FileChecks, spec: SampleSpec, path: str, max_out: float) -> None:
    """Log the sentinels mapped; refuse unconfigured sentinels and out-of-range values above ``max_out``."""
    for name, n in checks.mapped.items():
        values = ", ".join(f"{v:g}" for v in spec.sentinels(spec.contract.column(name)))
        log.info("%s: branch %s: %d undefined values (%s) mapped to NaN", path, spec.branch(name), n, values)
    for name, (n, total) in checks.unmapped.items():
        if n and n > max_out * total:
            raise spec.error(f"{n} of {total} values equal an LHCb undefined-value sentinel "
                             f"({', '.join(f'{v:g}' for v in LHCB_SENTINELS)}) but no sentinel is configured for "
                             f"this branch: declare them with inputs.{spec.name}.sentinels", path, name)
    for name, (n, total, lo, hi) in checks.out.items():
        if not n:
            continue
        rng = spec.contract.column(name).range
        limit = 0.0 if name == spec.contract.weight else max_out
        what = (f"{int(n)} of {int(total)} values ({n / max(total, 1):.3%}) outside the physical range {rng} "
                f"(seen from {lo:.6g} to {hi:.6g})")
        if n > limit * total:
            tol = ("weights must all lie in it" if name == spec.contract.weight
                   else f"above prepare.max_out_of_range_fraction = {max_out:g}")
            raise spec.error(f"{what}, {tol}: corrupt file, wrong unit or unmapped sentinel?", path, name)
        log.warning("%s: branch %s: %s, within prepare.max_out_of_range_fraction: set to NaN", path,
                    spec.branch(name), what)


def _finish_checks(checks: _FileChecks, spec: SampleSpec, path: str, max_fraction: float,
                   max_out: float = 0.001) -> None:
    _finish_conventions(checks, spec, path, max_out)
    rules = DEFINED_WHERE.get(spec.kind, {})
    for name, (bad, n) in checks.nonfinite.items():
        if n and bad / n > max_fraction:
            gate = rules.get(name)
            where = " and ".join(f"{spec.branch(g)} != 0" for g in gate) if gate else ""
            where = f" where {where}" if where else ""
            raise spec.error(f"{bad / n:.2%} of the values{where} are NaN or inf ({bad} of {n}), above "
                             f"prepare.max_nonfinite_fraction = {max_fraction:g}", path, name)
    weight = spec.contract.weight
    if weight is None or checks.w_n == 0:
        return
    if checks.w_bad:
        raise spec.error(f"{checks.w_bad} of {checks.w_n} weights are NaN or inf (weights must all be finite)",
                         path, weight)
    if checks.w_abs == 0.0:
        raise spec.error(f"all {checks.w_n} weights are zero", path, weight)
    if checks.w_sum <= 1e-9 * checks.w_abs:
        raise spec.error(f"the weights sum to {checks.w_sum:.6g} (zero or negative; sum of |w| = "
                         f"{checks.w_abs:.6g}): nothing left after weighting", path, weight)


# ------------------------------------------------------------------------------------------------ reading
def _cast(arr: Any, col: Column, path: str, spec: SampleSpec) -> Any:
    """Cast a flat numpy or jagged awkward array to the contract dtype (checking integer ranges)."""
    import awkward as ak

    dst = np.dtype(col.base_dtype)
    if col.jagged:
        content = _as_numpy(ak.flatten(arr, axis=None))
        _check_int_range(content, dst, col, path, spec)
        return ak.values_astype(arr, dst)
    arr = _as_numpy(arr)
    _check_int_range(arr, dst, col, path, spec)
    return arr.astype(dst, copy=False)


def _check_int_range(values: np.ndarray, dst: np.dtype, col: Column, path: str, spec: SampleSpec) -> None:
    if dst.kind not in "iu" or values.dtype.kind not in "iu" or np.can_cast(values.dtype, dst) or not len(values):
        return
    info = np.iinfo(dst)
    lo, hi = values.min(), values.max()
    if lo < info.min or hi > info.max:
        raise spec.error(f"wrong dtype: values in [{lo}, {hi}] overflow the contract's {dst.name}", path, col.name)


def read_chunks(ttree: Any, path: str, spec: SampleSpec, columns: list[Column],
                step_size: int) -> Iterator[dict[str, Any]]:
    """Yield chunks of at most ``step_size`` entries as {contract name: array in the contract dtype}.

    Flat columns are numpy arrays, jagged ones awkward arrays. A read error names the branch that fails.
    """
    names = [spec.branch(c.name) for c in columns]
    n = ttree.num_entries
    for start in range(0, n, step_size):
        stop = min(n, start + step_size)
        try:
            arrays = ttree.arrays(names, entry_start=start, entry_stop=stop, library="ak", how=dict)
        except Exception as err:
            _raise_read_error(ttree, path, spec, columns, start, stop, err)
        yield {c.name: _cast(arrays[b], c, path, spec) for c, b in zip(columns, names, strict=True)}


def _raise_read_error(ttree: Any, path: str, spec: SampleSpec, columns: list[Column], start: int, stop: int,
                      err: Exception) -> None:
    """Find the branch whose baskets fail in [start, stop) and raise an InputError naming it."""
    for c in columns:
        try:
            ttree[spec.branch(c.name)].array(entry_start=start, entry_stop=stop, library="ak")
        except Exception as e:
            raise spec.error(f"cannot read entries {start}-{stop} (corrupt or truncated file): {_short(e)}",
                             path, c.name) from e
    raise spec.error(f"cannot read entries {start}-{stop}: {_short(err)}", path) from err


@dataclass
class InputFile:
    """One validated input file: its path, entry count and the contract columns it provides."""

    path: str
    entries: int
    columns: list[Column]


def validate_inputs(spec: SampleSpec) -> tuple[list[InputFile], list[Column]]:
    """Open every file of ``spec`` and check its schema (no data read yet).

    Returns the files and the columns to read (required ones plus optional ones that every file has).
    """
    files = []
    for path in expand_inputs(spec.files, spec.tree, spec.timeout):
        ttree = open_tree(path, spec)
        files.append(InputFile(path, int(ttree.num_entries), check_schema(ttree, path, spec)))
        ttree.file.close()
    common = [c for c in spec.contract.columns if all(c in f.columns for f in files)]
    dropped = sorted({c.name for f in files for c in f.columns} - {c.name for c in common})
    if dropped:
        log.warning("%s: optional branches %s are not in every file: not read", spec.name, ", ".join(dropped))
    return files, common


def iterate_sample(spec: SampleSpec, files: list[InputFile], columns: list[Column], *, step_size: int,
                   max_nonfinite_fraction: float, max_out_of_range_fraction: float = 0.001
                   ) -> Iterator[tuple[InputFile, dict[str, Any]]]:
    """Stream (file, chunk) pairs of a validated sample, checking the data as it goes.

    The per-file checks (non-finite fractions, weights) raise after a file's last chunk: a consumer must not
    commit anything before the iterator is exhausted.
    """
    for f in files:
        ttree = open_tree(f.path, spec)
        checks = _FileChecks()
        try:
            for chunk in read_chunks(ttree, f.path, spec, columns, step_size):
                _check_chunk(chunk, spec, checks, f.path)
                yield f, chunk
        finally:
            ttree.file.close()
        _finish_checks(checks, spec, f.path, max_nonfinite_fraction, max_out_of_range_fraction)


def read_sample(params: dict, sample: str) -> dict[str, Any]:
    """Read a whole (small) sample into memory: {contract name: array}, all checks applied."""
    import awkward as ak

    spec = sample_spec(params, sample)
    files, columns = validate_inputs(spec)
    prep = params.get("prepare", {})
    parts: dict[str, list] = {c.name: [] for c in columns}
    for _, chunk in iterate_sample(spec, files, columns, step_size=prep.get("step_size", 200000),
                                   max_nonfinite_fraction=prep.get("max_nonfinite_fraction", 0.02),
                                   max_out_of_range_fraction=prep.get("max_out_of_range_fraction", 0.001)):
        for k, v in chunk.items():
            parts[k].append(v)
    return {c.name: (ak.concatenate(parts[c.name]) if c.jagged else np.concatenate(parts[c.name]))
            for c in columns}
