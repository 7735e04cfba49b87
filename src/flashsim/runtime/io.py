"""Generator-level particles in (ROOT files, a sample of ``params.yaml``, a particle gun) and ntuples out.

Inputs are read in chunks of contract-named numpy columns. Only generator-level columns (and a few event-level
extras such as the primary vertex and the signal-decay bookkeeping) are passed on: the reconstructed and PID
columns of a reference file never leak into the flash-simulated output.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from flashsim.detector import SPECIES_PDG
from flashsim.errors import ConfigError, InputError
from flashsim.io.contract import SAMPLES

REQUIRED = ("mc_px", "mc_py", "mc_pz", "mcID")
GENERATOR = ("evtNumber", "nTracks", "nPVs", "mc_x", "mc_y", "mc_z", "mc_px", "mc_py", "mc_pz", "mc_charge", "mcID")
EXTRAS = ("pv_x", "pv_y", "pv_z", "signal_role", "mother_ID")
LEPTONS = {11, 13}


def charge_of(pdg: np.ndarray) -> np.ndarray:
    """Electric charge (units of e) of PDG ids, from their quark content: 0 for neutral particles (photons,
    neutrons, K0L, pi0, ...) and for ids it cannot decode; negative leptons have positive ids."""
    pdg = np.asarray(pdg, np.int64)
    a = np.abs(pdg)
    q3 = np.zeros(a.shape, np.int64)  # thirds of e
    for k, v in {11: -3, 13: -3, 15: -3, 17: -3, 24: 3, 37: 3}.items():
        q3[a == k] = v
    quark = np.array([0, -1, 2, -1, 2, -1, 2, -1, 2, 0])  # d u s c b t b' t'
    n1, n2, n3 = (a // 1000) % 10, (a // 100) % 10, (a // 10) % 10
    had = (a > 100) & (a < 10_000_000) & (n2 > 0) & (n3 > 0)
    meson = had & (n1 == 0)
    down_first = meson & ((n2 == 3) | (n2 == 5))  # s-sbar / b-bar ordering of the PDG scheme
    q3 = np.where(meson & ~down_first, quark[n2] - quark[n3], q3)
    q3 = np.where(down_first, quark[n3] - quark[n2], q3)
    q3 = np.where(had & (n1 > 0), quark[n1] + quark[n2] + quark[n3], q3)
    q3 = np.where((a >= 1) & (a <= 8), quark[np.minimum(a, 9)], q3)
    return (np.sign(pdg) * np.sign(q3) * (np.abs(q3) // 3)).astype(np.int32)  # quarks (thirds) -> 0


def is_track(pdg: np.ndarray) -> np.ndarray:
    """Particles that become tracks: charged e, mu, pi, K, p (by |PDG id|)."""
    return np.isin(np.abs(np.asarray(pdg)), list(SPECIES_PDG.values()))


def _complete(cols: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
    """Fill optional generator-level columns (charge from the PDG id, origin at 0, running event numbers)."""
    n = len(cols["mcID"])
    cols.setdefault("mc_charge", charge_of(cols["mcID"]))
    for c in ("mc_x", "mc_y", "mc_z"):
        cols.setdefault(c, np.zeros(n, np.float32))
    cols.setdefault("evtNumber", np.arange(start, start + n, dtype=np.int64))
    return cols


def expand_files(files: list[str] | str) -> list[str]:
    out = []
    for f in [files] if isinstance(files, str) else files:
        if f.startswith("root://") or not any(ch in f for ch in "*?["):
            out.append(f)
        else:
            hits = sorted(glob.glob(f))
            if not hits:
                raise InputError("no file matches this pattern", file=f)
            out += hits
    return out


def read_root(files: list[str] | str, tree: str | None = None, branches: dict[str, str] | None = None,
              step_size: int = 200_000, max_entries: int | None = None,
              keep: tuple[str, ...] = GENERATOR + EXTRAS) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of contract-named generator-level columns from ROOT files (paths, globs, root:// URLs).

    ``branches`` maps contract names to the names in the files; ``tree`` defaults to the only TTree of a file.
    """
    to_file = dict(branches or {})
    seen = 0
    for path in expand_files(files):
        with open_tree(path, tree) as (t, name):
            wanted = contract_branches(t, path, name, to_file, REQUIRED, keep, "missing generator-level branch")
            for chunk in t.iterate(list(wanted.values()), step_size=step_size, library="np"):
                cols = {c: np.asarray(chunk[b]) for c, b in wanted.items()}
                n = len(cols["mcID"])
                if max_entries is not None and seen + n > max_entries:
                    cols = {k: v[: max_entries - seen] for k, v in cols.items()}
                    n = max_entries - seen
                for c in ("mc_px", "mc_py", "mc_pz"):
                    if not np.all(np.isfinite(cols[c])):
                        raise InputError("non-finite generated momentum", file=path, tree=name, branch=wanted[c])
                yield _complete(cols, seen)
                seen += n
                if max_entries is not None and seen >= max_entries:
                    return


@contextmanager
def open_tree(path: str, tree: str | None) -> Iterator[tuple[object, str]]:
    """``(uproot TTree, its name)`` of a ROOT file (``tree`` defaults to its only TTree); clear errors otherwise."""
    import uproot

    try:
        f = uproot.open(path)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"cannot open as ROOT ({first})", file=path) from err
    with f:
        name = tree or _only_tree(f, path)
        if name not in f:
            raise InputError("no such tree", file=path, tree=name)
        yield f[name], name


def contract_branches(t, path: str, name: str, to_file: dict[str, str], required: tuple[str, ...],
                      wanted: tuple[str, ...], missing: str = "missing branch") -> dict[str, str]:
    """Contract name -> file branch for the ``wanted`` columns present; an error names a missing required one."""
    present = set(t.keys())
    for c in required:
        if to_file.get(c, c) not in present:
            raise InputError(missing, file=path, tree=name, branch=to_file.get(c, c))
    return {c: to_file.get(c, c) for c in wanted if to_file.get(c, c) in present}


def _only_tree(f, path: str) -> str:
    trees = [k.split(";")[0] for k, c in f.classnames().items() if c in ("TTree", "ROOT::RNTuple")]
    if len(trees) != 1:
        raise InputError(f"give the tree name (file has {len(trees)} trees: {', '.join(sorted(set(trees)))})",
                         file=path)
    return trees[0]


def read_sample(sample: str, params: dict, **kw) -> Iterator[dict[str, np.ndarray]]:
    """A sample of ``params.yaml`` (``inputs.<sample>``: files, tree, branch names), e.g. the generated signal."""
    spec = params.get("inputs", {}).get(sample)
    if spec is None:
        raise ConfigError(f"params.yaml: inputs.{sample} is not defined")
    kind = params.get("detsim", {}).get("samples", {}).get(sample, {}).get("kind", sample)
    tree = spec.get("tree") or (SAMPLES[kind].tree if kind in SAMPLES else None)
    return read_root(spec["files"], tree, spec.get("branches"), **kw)


# --- particle gun ------------------------------------------------------------------------------------------------
GUN_DEFAULTS = {
    "n": 100_000,
    "species": {"pi": 0.72, "K": 0.14, "p": 0.08, "mu": 0.03, "e": 0.03},
    "p": {"min": 2000.0, "max": 200_000.0, "dist": "log"},
    "eta": {"min": 1.8, "max": 5.2},
    "phi": {"min": -math.pi, "max": math.pi},
    "origin": {"x": 0.04, "y": 0.04, "z": 45.0},
    "nTracks": {"min": 10, "max": 400},
    "nPVs": {"min": 1, "max": 3},
}
_GUN_KEYS = set(GUN_DEFAULTS) | {"seed"}


def load_gun(path: str | Path) -> dict:
    """A particle-gun configuration (YAML) merged over :data:`GUN_DEFAULTS`; unknown keys are an error."""
    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read particle gun {path}: {err}") from err
    return gun_config(cfg, str(path))


def gun_config(cfg: dict, where: str = "particle gun") -> dict:
    bad = set(cfg) - _GUN_KEYS
    if bad:
        raise ConfigError(f"{where}: unknown keys {sorted(bad)} (known: {sorted(_GUN_KEYS)})")
    out = {**GUN_DEFAULTS, **cfg}
    sp = out["species"]
    if isinstance(sp, str):
        sp = {sp: 1.0}
    elif isinstance(sp, list):
        sp = dict.fromkeys(sp, 1.0)
    unknown = set(sp) - set(SPECIES_PDG)
    if unknown or not sp:
        raise ConfigError(f"{where}: species must be among {sorted(SPECIES_PDG)}, got {sorted(sp)}")
    out["species"] = sp
    return out


def _range(rng: np.random.Generator, spec, n: int, integer: bool = False) -> np.ndarray:
    if isinstance(spec, int | float):
        return np.full(n, spec)
    lo, hi = float(spec["min"]), float(spec["max"])
    if integer:
        return rng.integers(int(lo), int(hi) + 1, n)
    if spec.get("dist") == "log":
        return np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    return rng.uniform(lo, hi, n)


def particle_gun(cfg: dict, seed: int, chunk: int = 200_000) -> Iterator[dict[str, np.ndarray]]:
    """Generator-level particles from a gun configuration, in chunks; chunk ``i`` is seeded by (seed, i)."""
    from flashsim.seeding import stream_key

    total = int(cfg["n"])
    names = list(cfg["species"])
    w = np.array([cfg["species"][s] for s in names], float)
    pdgs = np.array([SPECIES_PDG[s] for s in names])
    for i, start in enumerate(range(0, total, chunk)):
        n = min(chunk, total - start)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream_key("particle_gun"), i])))
        species = rng.choice(len(names), n, p=w / w.sum())
        charge = np.where(rng.random(n) < 0.5, 1, -1)
        pdg = pdgs[species]
        mcid = np.where(np.isin(pdg, list(LEPTONS)), -charge, charge) * pdg
        p = _range(rng, cfg["p"], n)
        eta = _range(rng, cfg["eta"], n)
        phi = _range(rng, cfg["phi"], n)
        pt = p / np.cosh(eta)
        o = cfg["origin"]
        yield {
            "evtNumber": np.arange(start, start + n, dtype=np.int64),
            "nTracks": _range(rng, cfg["nTracks"], n, integer=True).astype(np.int32),
            "nPVs": _range(rng, cfg["nPVs"], n, integer=True).astype(np.int32),
            "mc_x": (rng.standard_normal(n) * o["x"]).astype(np.float32),
            "mc_y": (rng.standard_normal(n) * o["y"]).astype(np.float32),
            "mc_z": (rng.standard_normal(n) * o["z"]).astype(np.float32),
            "mc_px": (pt * np.cos(phi)).astype(np.float32),
            "mc_py": (pt * np.sin(phi)).astype(np.float32),
            "mc_pz": (pt * np.sinh(eta)).astype(np.float32),
            "mc_charge": charge.astype(np.int32),
            "mcID": mcid.astype(np.int32),
        }


# --- output ------------------------------------------------------------------------------------------------------
class NtupleWriter:
    """Append chunks of columns to one TTree of a new ROOT file (call inside ``atomic_output``)."""

    def __init__(self, path: str | Path, tree: str, compression: str = "lz4") -> None:
        import uproot

        comp = {"lz4": uproot.LZ4(1), "zlib": uproot.ZLIB(1), "zstd": uproot.ZSTD(1), "none": None}[compression]
        self.file = uproot.recreate(str(path), compression=comp)
        self.tree_name = tree
        self.tree = None
        self.entries = 0

    def write(self, cols: dict[str, np.ndarray]) -> None:
        if self.tree is None:
            self.tree = self.file.mktree(self.tree_name, {k: v.dtype for k, v in cols.items()})
        self.tree.extend(cols)
        self.entries += len(next(iter(cols.values())))

    def close(self) -> None:
        self.file.close()
