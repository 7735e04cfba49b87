"""The data contract: every sample's branches, with dtype, unit and meaning.

Branch names follow LHCb's own ntuples so that users' real files work unchanged; ``params.yaml``
maps each contract name to the name in a given file (``inputs.<sample>.branches``) when they differ.
``flashsim contract`` renders this module as ``docs/data-contract.md`` (a test keeps the two in sync).
Floating-point branches are NaN where a quantity does not exist (e.g. a track that was not reconstructed).

Each column also carries LHCb's undefined-value conventions and a physical range: ``sentinels`` are the values
that DecayTreeTuple/PIDCalib write where a quantity is undefined (-1000, -999, -9999); ``prepare`` maps them to
NaN (``inputs.<sample>.sentinels`` overrides them per input). ``valid`` is the range a value must lie in;
``prepare`` refuses a file with more than ``prepare.max_out_of_range_fraction`` of a branch outside it (garbage
from a corrupted basket, a wrong unit, an unmapped sentinel).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path

HELP = "print or write the data contract (docs/data-contract.md)"


LHCB_SENTINELS: tuple[float, ...] = (-1000.0, -999.0, -9999.0)
"""Values DecayTreeTuple and PIDCalib write where a quantity is undefined."""

FLOAT_BOUND = 1e9
"""No float branch of the contract exceeds this in magnitude (the default range: catches garbage values)."""


@dataclass(frozen=True)
class Range:
    """A closed (or half-open) interval ``[lo, hi]``; ``lo_open``/``hi_open`` exclude the bound."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def outside(self, v):
        """Boolean mask of the finite values outside the range (NaN and inf are never outside)."""
        import numpy as np

        v = np.asarray(v)
        with np.errstate(invalid="ignore"):
            low = (v <= self.lo) if self.lo_open else (v < self.lo)
            high = (v >= self.hi) if self.hi_open else (v > self.hi)
        return (low | high) & np.isfinite(v) if v.dtype.kind == "f" else low | high

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


def symmetric(bound: float) -> Range:
    """``(-bound, bound)``."""
    return Range(-bound, bound, True, True)


ANY_FLOAT = symmetric(FLOAT_BOUND)
COUNT = Range(0, 1e7)
POSITIVE_MOMENTUM = Range(0.0, 1e8, lo_open=True)  # MeV/c: 100 TeV/c is far beyond any LHC particle
ETA = symmetric(10.0)
PROBABILITY = Range(0.0, 1.0)
DLL = symmetric(1000.0)  # the -1000 sentinel is mapped to NaN first
LOG_LIKELIHOOD = Range(-1000.0, 0.0, lo_open=True)
WEIGHT = symmetric(1e3)  # sWeights are O(1); a |sWeight| of 1000 means a broken fit or a broken file


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # numpy dtype name; "var * <dtype>" for jagged (one list per event)
    unit: str
    doc: str
    optional: bool = False  # truth-only branches that real data does not have
    sentinels: tuple[float, ...] = ()  # values meaning "undefined", mapped to NaN at ingestion
    valid: Range | None = None  # physical range (default: |v| < FLOAT_BOUND for floats, none for integers)

    @property
    def range(self) -> Range | None:
        """The physical range of the values (the default for floats when none is given)."""
        if self.valid is not None:
            return self.valid
        return ANY_FLOAT if self.base_dtype.startswith("float") else None

    @property
    def jagged(self) -> bool:
        return self.dtype.startswith("var")

    @property
    def base_dtype(self) -> str:
        return self.dtype.split("*")[-1].strip()


@dataclass(frozen=True)
class Sample:
    kind: str
    tree: str
    entry: str  # what one entry is
    doc: str
    columns: tuple[Column, ...]
    weight: str | None = None  # the per-entry weight branch, if any

    def names(self, *, optional: bool = True) -> list[str]:
        return [c.name for c in self.columns if optional or not c.optional]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _cols(names: str, dtype: str, unit: str, doc: str, optional: bool = False) -> list[Column]:
    return [Column(n, dtype, unit, doc.format(n=n), optional) for n in names.split()]


def _with(cols: list[Column], valid: Range | None = None, sentinels: tuple[float, ...] = ()) -> list[Column]:
    return [replace(c, valid=valid, sentinels=sentinels) for c in cols]


STATE = ("x", "y", "z", "tx", "ty")
STATE_UNITS = {"x": "mm", "y": "mm", "z": "mm", "tx": "1", "ty": "1"}

COV_UNITS = ("mm", "mm", "1", "1", "c/MeV")
"""Units of the closest-to-beam state (x, y, tx, ty, q/p) whose covariance the ``cov_ClosestToBeam_i_j`` hold."""


def unit_product(a: str, b: str) -> str:
    """The unit of a product of two quantities: ``mm`` x ``mm`` = ``mm^2``, ``1`` x ``c/MeV`` = ``c/MeV``,
    ``c/MeV`` x ``c/MeV`` = ``c^2/MeV^2``."""
    if a == "1":
        return b
    if b == "1":
        return a
    if a == b:
        num, _, den = a.partition("/")
        return f"{num}^2/{den}^2" if den else f"{a}^2"
    return f"{a} {b}"


_GEN = [
    Column("evtNumber", "int64", "1", "event number (unique within a file); the train/val/test split is by event",
           valid=Range(0, 2.0**63)),
    Column("nTracks", "int32", "1", "number of reconstructed tracks in the event (occupancy)", valid=COUNT),
    Column("nPVs", "int32", "1", "number of primary vertices in the event", valid=COUNT),
    *_cols("mc_x mc_y mc_z", "float32", "mm", "generated origin vertex ({n})"),
    *_cols("mc_px mc_py mc_pz", "float32", "MeV/c", "generated momentum ({n})"),
    Column("mc_charge", "int32", "e", "generated charge (+1/-1)", valid=Range(-1, 1)),
    Column("mcID", "int32", "1", "PDG id of the generated particle (±11, ±13, ±211, ±321, ±2212)"),
]
_RECO = [
    Column("acceptance", "int32", "1", "1 if the particle crosses the tracking stations (geometrical acceptance)"),
    Column("type", "int32", "1", "reconstructed track type: 0 none, 3 long, 4 upstream, 5 downstream"),
    *[Column(f"true_{s}_ClosestToBeam", "float32", STATE_UNITS[s], f"true state at closest approach to the beam: {s}")
      for s in STATE],
    *[Column(f"{s}_ClosestToBeam", "float32", STATE_UNITS[s],
             f"reconstructed state at closest approach to the beam: {s} (NaN if type 0)") for s in STATE],
    Column("p", "float32", "MeV/c", "reconstructed momentum (NaN if type 0)", valid=POSITIVE_MOMENTUM),
    Column("chi2PerDoF", "float32", "1", "track fit chi2 per degree of freedom (NaN if type 0)"),
    Column("nDoF", "float32", "1", "track fit degrees of freedom (NaN if type 0)"),
    Column("ghostProb", "float32", "1", "ghost probability in [0, 1] (NaN if type 0)", valid=PROBABILITY),
    *[Column(f"cov_ClosestToBeam_{i}_{j}", "float32", unit_product(COV_UNITS[i], COV_UNITS[j]),
             f"covariance of the closest-to-beam state (x, y, tx, ty, q/p) element [{i}][{j}] (NaN if type 0)")
      for i in range(5) for j in range(i, 5)],
]
PID_RESPONSE = [
    *_with(_cols("RichDLLe RichDLLmu RichDLLk RichDLLp", "float32", "1", "RICH delta log-likelihood ({n}) w.r.t. pion"),
          DLL, LHCB_SENTINELS),
    Column("isMuon", "int32", "1", "1 if the track has hits in the muon stations matching the isMuon criteria",
           valid=Range(0, 1)),
    *_with(_cols("MuonMuLL MuonBgLL", "float32", "1", "muon-system log-likelihood ({n}); NaN if isMuon == 0"),
          LOG_LIKELIHOOD, LHCB_SENTINELS),
    *_with(_cols("PIDe PIDmu PIDK PIDp", "float32", "1", "combined (GlobalPID) delta log-likelihood ({n})"), DLL,
          LHCB_SENTINELS),
    *_with(_cols("ProbNNe ProbNNmu ProbNNpi ProbNNk ProbNNp", "float32", "1",
                 "neural-network probability ({n}), [0, 1]"), PROBABILITY, LHCB_SENTINELS),
]

TRACKING = Sample(
    "tracking", "Tracking", "one generated charged particle",
    "Detailed-simulation sample for the tracking models (acceptance, efficiency, resolution, covariance).",
    tuple(_GEN + _RECO),
)

SIGNAL = Sample(
    "signal", "Signal", "one generated charged particle of a signal decay",
    "Lb0 -> Lc+ mu- nu, Lc+ -> p K- pi+ (and charge conjugate): generator level, reference tracking and PID "
    "response, for the end-to-end check of the flash simulation.",
    tuple(
        _GEN
        + [*_cols("pv_x pv_y pv_z", "float32", "mm", "primary vertex of the event ({n})"),
           Column("signal_role", "int32", "1", "1 p, 2 K, 3 pi (from Lc+), 4 mu (from Lb0)"),
           Column("mother_ID", "int32", "1", "PDG id of the mother (±4122 Lc, ±5122 Lb)")]
        + _RECO
        + [replace(c, doc=c.doc + ("; NaN if type 0" if c.dtype == "float32" else "; 0 if type 0"))
           for c in PID_RESPONSE]
    ),
)

_PROBE = "probe_Brunel_"
PID_CALIB = Sample(
    "pid_calib", "DecayTree", "one probe-track candidate",
    "PIDCalib-like calibration sample for one species, with combinatorial background under the mother's mass "
    "peak and per-candidate sWeights from an sPlot fit of that mass.",
    (
        Column(f"{_PROBE}P", "float32", "MeV/c", "probe momentum", valid=POSITIVE_MOMENTUM),
        Column(f"{_PROBE}ETA", "float32", "1", "probe pseudorapidity", valid=ETA),
        Column("nTracks_Brunel", "int32", "1", "number of tracks in the event", valid=COUNT),
        Column(f"{_PROBE}trackcharge", "int32", "e", "probe charge", valid=Range(-1, 1)),
        *_with(_cols(" ".join(f"{_PROBE}RichDLL{h}" for h in ("e", "mu", "k", "p")), "float32", "1",
                     "RICH DLL ({n}); undefined without RICH information"), DLL, LHCB_SENTINELS),
        Column(f"{_PROBE}isMuon", "int32", "1", "isMuon flag of the probe", valid=Range(0, 1)),
        Column(f"{_PROBE}MuonUnbiased", "int32", "1", "1 if the probe's muon response is unbiased by the trigger",
               valid=Range(0, 1)),
        *_with(_cols(f"{_PROBE}MuonMuLL {_PROBE}MuonBgLL", "float32", "1", "muon LL ({n}); NaN if isMuon == 0"),
               LOG_LIKELIHOOD, LHCB_SENTINELS),
        *_with(_cols(" ".join(f"{_PROBE}PID{h}" for h in ("e", "mu", "K", "p")), "float32", "1",
                     "GlobalPID DLL ({n})"), DLL, LHCB_SENTINELS),
        *_with(_cols(" ".join(f"{_PROBE}MC15TuneV1_ProbNN{h}" for h in ("e", "mu", "pi", "k", "p")), "float32", "1",
                     "ProbNN ({n}), [0, 1]"), PROBABILITY, LHCB_SENTINELS),
        Column("probe_sWeight", "float64", "1", "signal sWeight from the sPlot fit (can be negative)", valid=WEIGHT),
        Column("mother_M", "float32", "MeV/c^2", "mass of the tag-and-probe mother (J/psi, D0, Lambda)",
               valid=Range(0.0, 1e6, lo_open=True)),
        Column("evtNumber", "int64", "1", "event number", valid=Range(0, 2.0**63)),
        Column("is_signal", "int32", "1", "truth: 1 signal, 0 background (reference simulation only)", True,
               valid=Range(0, 1)),
    ),
    weight="probe_sWeight",
)

ECAL = Sample(
    "ecal", "Calo", "one event (jagged lists of photons and clusters)",
    "Photons reaching the ECAL face and the clusters reconstructed from them (merging of close photons, an "
    "energy threshold and a/sqrt(E) (+) b resolution, so n photons give m != n clusters). Photons are ordered "
    "by decreasing energy within an event; positions are on the ECAL face plane (z = 12620 mm).",
    (
        Column("evtNumber", "int64", "1", "event number", valid=Range(0, 2.0**63)),
        Column("nPhotons", "int32", "1", "number of generated photons reaching the ECAL", valid=COUNT),
        *_cols("photon_x photon_y", "var * float32", "mm", "photon impact point on the ECAL face ({n})"),
        *_cols("photon_tx photon_ty", "var * float32", "1", "photon slopes ({n})"),
        Column("photon_E", "var * float32", "MeV", "photon energy", valid=Range(0.0, 1e7)),
        Column("nClusters", "int32", "1", "number of reconstructed clusters", valid=COUNT),
        *_cols("cluster_x cluster_y", "var * float32", "mm", "cluster barycentre on the ECAL face ({n})"),
        Column("cluster_E", "var * float32", "MeV", "cluster energy", valid=Range(0.0, 1e7)),
        Column("cluster_nPhotons", "var * int32", "1", "truth: photons merged into the cluster", True),
        Column("photon_clusterIndex", "var * int32", "1",
               "truth: index in the event's cluster list of the cluster the photon went into, -1 if lost", True),
    ),
)

GHOST_FEATURES = (
    "chi2PerDoF nDoF veloChi2PerDoF veloNDoF TChi2PerDoF TNDoF matchChi2 nVeloHits nUTHits nFTHits "
    "nVeloHoles nFTHoles p pt eta nTracks nPVs"
).split()
GHOST = Sample(
    "ghost", "GhostTracks", "one reconstructed long track",
    "Track-quality features of reconstructed long tracks, real or ghost (fake), for the ghost-probability MLP.",
    (
        Column("evtNumber", "int64", "1", "event number", valid=Range(0, 2.0**63)),
        *[Column(f, "float32", {"p": "MeV/c", "pt": "MeV/c"}.get(f, "1"), f"track-quality feature {f}")
          for f in GHOST_FEATURES],
        Column("isGhost", "int32", "1", "truth: 1 if the track matches no generated particle", valid=Range(0, 1)),
        Column("true_ghostProb", "float32", "1", "truth: the reference simulation's ghost probability", True,
               valid=PROBABILITY),
    ),
)

SAMPLES: dict[str, Sample] = {s.kind: s for s in (TRACKING, SIGNAL, PID_CALIB, ECAL, GHOST)}


def markdown() -> str:
    """Render the contract as Markdown."""
    lines = [
        "# flashsim data contract",
        "",
        "Generated by `flashsim contract --write` from `src/flashsim/io/contract.py`; do not edit by hand.",
        "",
        "Units follow LHCb: MeV, MeV/c, mm. Floating-point quantities that do not exist for an entry",
        "(a particle that was not reconstructed, a muon LL without isMuon) are NaN. Tree and branch names are",
        "defaults: `params.yaml` maps contract names to the names in your files (`inputs.<sample>.tree` and",
        "`inputs.<sample>.branches`), and inputs may be paths, globs or `root://` URLs. Branches marked",
        "*truth* exist only in the reference detector simulation and are optional.",
        "",
        "*Undefined values* are the sentinels DecayTreeTuple/PIDCalib write where a quantity is undefined:",
        "`prepare` maps them to NaN and logs how many per branch (`inputs.<sample>.sentinels` overrides them per",
        "input, `[]` turns them off). *Valid range*: `prepare` refuses a file with more than",
        "`prepare.max_out_of_range_fraction` of a branch's values outside it (and sets the few it tolerates to",
        "NaN, reported); `(`/`)` exclude the bound.",
        "",
    ]
    for s in SAMPLES.values():
        lines += [f"## `{s.kind}` (default tree `{s.tree}`; one entry = {s.entry})", "", s.doc, ""]
        if s.weight:
            lines += [f"Per-entry weight: `{s.weight}`.", ""]
        lines += ["| branch | dtype | unit | valid range | undefined values | meaning |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in s.columns:
            doc = f"*truth* — {c.doc}" if c.optional else c.doc
            rng = str(c.range) if c.range else "any"
            undef = ", ".join(f"{v:g}" for v in c.sentinels) or "—"
            lines.append(f"| `{c.name}` | {c.dtype} | {c.unit} | {rng} | {undef} | {doc} |")
        lines.append("")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--write", action="store_true", help="write docs/data-contract.md instead of printing")


def run(args: argparse.Namespace) -> int:
    from flashsim.config import repo_root
    from flashsim.io.atomic import write_text

    text = markdown()
    if args.write:
        write_text(Path(repo_root()) / "docs" / "data-contract.md", text)
    else:
        print(text)
    return 0
