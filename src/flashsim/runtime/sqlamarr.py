"""The flash-simulation chain as a SQLamarr pipeline over the shared objects of ``flashsim cabi``.

:func:`pipeline_config` writes the chain of :mod:`flashsim.runtime.chain` as SQLamarr steps (JSON, stored next
to the shared objects as ``sqlamarr_pipeline.json``): one ``Plugin`` (deterministic models, classifiers) or
``GenerativePlugin`` (generators, ``n_random`` normals) per model, with the model's features computed in SQL
from the event store, and ``TemporaryTable`` steps for what the chain does between models (the acceptance and
track-type draws, residuals turned into reconstructed values, the isMuon draw). :func:`execute` runs such a
file with SQLamarr on HepMC2 files: no glue code is needed on the Lamarr side beyond this runner (or the same
loop over the steps in C++).

Tables: ``fs_particles`` (final-state charged e, mu, pi, K, p: ``mcparticle_id``, ``genevent_id``, ``mcID``,
``mc_x``..``mc_pz``, ``mc_charge``, ``nTracks`` = charged tracks of the event), ``fs_draws`` (the uniform numbers
of the acceptance, track-type and isMuon draws), and the persistent result ``fs_output`` (one row per
particle: the generator-level columns, ``acceptance``, ``type`` and every simulated column; NULL where a stage
did not apply). The draws and the generators' noise come from SQLamarr's per-connection generator (``seed``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

from flashsim.detector import SPECIES_PDG, TRACK_TYPE_CODES
from flashsim.errors import ConfigError, InputError

HELP = "run the flash-simulation chain inside SQLamarr on HepMC2 files (the pipeline `flashsim cabi` writes)"
CONFIG_NAME = "sqlamarr_pipeline.json"
OUTPUT_TABLE = "fs_output"
log = logging.getLogger(__name__)

_TRACKS = ", ".join(str(v) for v in SPECIES_PDG.values())
BASE_COLUMNS = ("mcparticle_id", "genevent_id", "mcID", "mc_x", "mc_y", "mc_z", "mc_px", "mc_py", "mc_pz",
                "mc_charge", "nTracks")
DRAWS = ("u_acc", "u_type", "u_mu")
PARTICLES_SQL = f"""SELECT m.mcparticle_id AS mcparticle_id, m.genevent_id AS genevent_id, m.pid AS mcID,
  gv.x AS mc_x, gv.y AS mc_y, gv.z AS mc_z, m.px AS mc_px, m.py AS mc_py, m.pz AS mc_pz,
  (CASE WHEN abs(m.pid) IN (11, 13) THEN -1 ELSE 1 END) * (CASE WHEN m.pid > 0 THEN 1 ELSE -1 END) AS mc_charge,
  nt.n AS nTracks
FROM MCParticles m
  JOIN GenParticles g ON g.genparticle_id = m.genparticle_id
  JOIN GenVertices gv ON gv.genvertex_id = g.production_vertex
  JOIN (SELECT m2.genevent_id AS genevent_id, COUNT(*) AS n FROM MCParticles m2
        JOIN GenParticles g2 ON g2.genparticle_id = m2.genparticle_id
        WHERE g2.status = 1 AND abs(m2.pid) IN ({_TRACKS}) GROUP BY m2.genevent_id) nt
    ON nt.genevent_id = m.genevent_id
WHERE g.status = 1 AND abs(m.pid) IN ({_TRACKS})
ORDER BY m.mcparticle_id"""

# SQL for the derived features of flashsim.runtime.features ({name} = another feature)
_DERIVED = {
    "mc_p": "sqrt({mc_px} * {mc_px} + {mc_py} * {mc_py} + {mc_pz} * {mc_pz})",
    "mc_pt": "sqrt({mc_px} * {mc_px} + {mc_py} * {mc_py})",
    "mc_eta": "asinh({mc_pz} / {mc_pt})",
    "mc_phi": "atan2({mc_py}, {mc_px})",
    "mc_tx": "{mc_px} / {mc_pz}",
    "mc_ty": "{mc_py} / {mc_pz}",
    "mc_log_p": "ln({mc_p})",
    "mc_log10_p": "log10({mc_p})",
    "mc_qop": "{mc_charge} / {mc_p}",
    "mc_abs_id": "abs({mcID})",
    "true_z_ClosestToBeam": "{mc_z} - ({mc_x} * {mc_tx} + {mc_y} * {mc_ty}) / ({mc_tx} * {mc_tx} + {mc_ty} * {mc_ty})",
    "true_x_ClosestToBeam": "{mc_x} + {mc_tx} * ({true_z_ClosestToBeam} - {mc_z})",
    "true_y_ClosestToBeam": "{mc_y} + {mc_ty} * ({true_z_ClosestToBeam} - {mc_z})",
    "true_tx_ClosestToBeam": "{mc_tx}",
    "true_ty_ClosestToBeam": "{mc_ty}",
    "true_qop_ClosestToBeam": "{mc_qop}",
    **{f"is_{s}": f"(CASE WHEN abs({{mcID}}) = {pdg} THEN 1.0 ELSE 0.0 END)" for s, pdg in SPECIES_PDG.items()},
    **{f"is_{n}": f"(CASE WHEN {{type}} = {c} THEN 1.0 ELSE 0.0 END)"
       for n, c in zip(("long", "upstream", "downstream"), TRACK_TYPE_CODES[1:], strict=True)},
    "charge": "{mc_charge}",
    "q": "{mc_charge}",
}
for _short in ("p", "pt", "eta", "phi", "tx", "ty", "log_p", "log10_p", "qop"):
    _DERIVED.setdefault(_short, f"{{mc_{_short}}}")
_DERIVED["logp"] = "{mc_log_p}"
_REF = re.compile(r"\{(\w+)\}")


def _ident(name: str, what: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"SQLamarr: {what} '{name}' is not a plain identifier ([A-Za-z0-9_]; SQLamarr aborts on "
                          "other names)")
    return name


def feature_sql(name: str, columns: set[str], alias: str = "s") -> str:
    """SQL for feature ``name`` over the state table ``alias`` holding ``columns``."""
    if name in columns:
        return f"{alias}.{name}"
    tpl = _DERIVED.get(name)
    if tpl is None:
        raise ConfigError(f"SQLamarr: no SQL form for the model input '{name}' (columns: {sorted(columns)})")
    return "(" + _REF.sub(lambda m: feature_sql(m[1], columns, alias), tpl) + ")"


def _truth_sql(col: str, columns: set[str]) -> str:
    for cand in (f"true_{col}", f"mc_{col}"):
        if cand in columns or cand in _DERIVED:
            return feature_sql(cand, columns)
    raise ConfigError(f"SQLamarr: no true value for the residual of '{col}'")


def _output_sql(out: str, columns: set[str]) -> tuple[str, str]:
    """``(column, SQL)`` of a model output (``o.<out>``) as the chain interprets it (residuals -> values)."""
    from flashsim.runtime.chain import decode_output

    col, how = decode_output(out)
    y = f"o.{_ident(out, 'model output')}"
    if how == "rel":
        return col, f"{_truth_sql(col, columns)} * (1.0 + {y})"
    if how == "abs":
        return col, f"{_truth_sql(col, columns)} + {y}"
    return col, y


class _Builder:
    """Accumulates the steps and tracks the columns of the current state table."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.columns: list[str] = [*BASE_COLUMNS, *DRAWS]
        self.state = "fs_state0"
        self.k = 0

    def table(self, name: str, columns: list[str], query: str, persistent: bool = False) -> None:
        self.steps.append({"kind": "TemporaryTable", "output_table": name, "outputs": list(columns), "query": query,
                           "persistent": persistent})

    def model(self, card: dict, where: str | None) -> str:
        cols = set(self.columns)
        feats = ",\n  ".join(f"{feature_sql(f, cols)} AS in_{i}" for i, f in enumerate(card["features"]))
        cond = f"\nWHERE {where}" if where else ""
        out_table = f"fs_out_{_ident(card['model'], 'model name')}"
        step = {"kind": card["plugin"], "model": card["model"], "library": card["library"],
                "function": card["function"],
                "query": f"SELECT s.mcparticle_id,\n  {feats}\nFROM {self.state} s{cond}\nORDER BY s.mcparticle_id",
                "output_table": out_table, "outputs": [_ident(o, "model output") for o in card["outputs"]],
                "references": ["mcparticle_id"]}
        if card["plugin"] == "GenerativePlugin":
            step["n_random"] = card["n_random"]
        self.steps.append(step)
        return out_table

    def update(self, out_table: str, new: dict[str, str]) -> None:
        """Next state: the current one with ``new`` columns (SQL over ``s`` and ``o``; where ``o`` has no row
        the old value stays)."""
        self.k += 1
        name = f"fs_state{self.k}"
        sel = []
        for c in self.columns:
            sel.append(f"COALESCE({new[c]}, s.{c}) AS {c}" if c in new else f"s.{c} AS {c}")
        added = [c for c in new if c not in self.columns]
        sel += [f"{new[c]} AS {c}" for c in added]
        self.table(name, [*self.columns, *added], f"SELECT {', '.join(sel)}\nFROM {self.state} s LEFT JOIN "
                   f"{out_table} o ON o.mcparticle_id = s.mcparticle_id\nORDER BY s.mcparticle_id")
        self.columns += added
        self.state = name

    def derive(self, new: dict[str, str]) -> None:
        """Next state with columns computed from the current one alone (``new`` replaces same-named columns)."""
        self.k += 1
        name = f"fs_state{self.k}"
        sel = [f"{new[c]} AS {c}" if c in new else f"s.{c} AS {c}" for c in self.columns]
        added = [c for c in new if c not in self.columns]
        sel += [f"{new[c]} AS {c}" for c in added]
        self.table(name, [*self.columns, *added], f"SELECT {', '.join(sel)}\nFROM {self.state} s\n"
                   "ORDER BY s.mcparticle_id")
        self.columns += added
        self.state = name


def model_card(models: Path, name: str) -> dict | None:
    """What the pipeline needs of a built model (``<name>.so.json`` of ``flashsim cabi``), None if not built."""
    meta = models / f"{name}.so.json"
    if not (models / f"{name}.so").exists() or not meta.exists():
        return None
    m = json.loads(meta.read_text())
    sq = m.get("sqlamarr") or {}
    if "plugin" not in sq:
        raise ConfigError(f"{meta}: built by an older `flashsim cabi` (no SQLamarr entry point): rebuild it")
    return {"model": name, "library": f"{name}.so", "function": sq["function"], "plugin": sq["plugin"],
            "n_random": int(sq.get("n_random", 0)), "features": list(m["features"]), "outputs": list(m["outputs"])}


def pipeline_config(models: str | Path, spec=None, skip: tuple[str, ...] = ()) -> dict:
    """The SQLamarr pipeline of the chain ``spec`` over the shared objects in ``models``.

    A stage whose shared object is missing is an error unless its role (``acceptance``, ``efficiency``,
    ``resolution``, ``covariance``, ``pid``) or model name is in ``skip``.
    """
    from flashsim import __version__
    from flashsim.runtime.chain import ChainSpec

    models, spec = Path(models), spec or ChainSpec()
    roles = {"acceptance": [spec.acceptance], "efficiency": [spec.efficiency], "resolution": [spec.resolution],
             "covariance": [spec.covariance], "pid": list(spec.pid.values())}
    cards, missing = {}, []
    for role, names in roles.items():
        for n in names:
            card = model_card(models, n)
            if card is not None:
                cards[n] = card
            elif role not in skip and n not in skip:
                missing.append(n)
    if missing:
        raise ConfigError(f"SQLamarr pipeline: no shared object for {', '.join(missing)} in {models} (run "
                          "`flashsim cabi NAME`, or skip the stage)")
    b = _Builder()
    b.table("fs_particles", list(BASE_COLUMNS), PARTICLES_SQL, persistent=True)
    b.table("fs_draws", ["mcparticle_id", *DRAWS], "SELECT mcparticle_id, " + ", ".join(
        f"random_uniform() AS {d}" for d in DRAWS) + " FROM fs_particles ORDER BY mcparticle_id", persistent=True)
    b.table("fs_state0", b.columns, "SELECT p.*, " + ", ".join(f"d.{d} AS {d}" for d in DRAWS) +
            " FROM fs_particles p JOIN fs_draws d ON d.mcparticle_id = p.mcparticle_id ORDER BY p.mcparticle_id")
    if spec.acceptance in cards:
        card = cards[spec.acceptance]
        out = b.model(card, None)
        b.update(out, {"acceptance": f"(CASE WHEN o.mcparticle_id IS NULL THEN 0 WHEN s.u_acc < o.{card['outputs'][-1]}"
                                     " THEN 1 ELSE 0 END)"})
    else:
        b.derive({"acceptance": "1"})
    if spec.efficiency in cards:
        card = cards[spec.efficiency]
        out = b.model(card, "s.acceptance = 1")
        probs, cases, acc = card["outputs"], [], []
        for j, code in enumerate(TRACK_TYPE_CODES[: len(probs) - 1]):
            acc.append(f"o.{probs[j]}")
            cases.append(f"WHEN s.u_type < {' + '.join(acc)} THEN {code}")
        last = TRACK_TYPE_CODES[len(probs) - 1]
        b.update(out, {"type": f"(CASE WHEN o.mcparticle_id IS NULL THEN 0 {' '.join(cases)} ELSE {last} END)"})
    else:
        b.derive({"type": "(CASE WHEN s.acceptance = 1 THEN 3 ELSE 0 END)"})
    for name in (spec.resolution, spec.covariance):
        if name in cards:
            out = b.model(cards[name], "s.type > 0")
            cols = set(b.columns)
            b.update(out, dict(_output_sql(o, cols) for o in cards[name]["outputs"]))
    types = ", ".join(str(t) for t in spec.pid_types)
    for species, name in spec.pid.items():
        if name in cards:
            out = b.model(cards[name], f"s.type IN ({types}) AND abs(s.mcID) = {SPECIES_PDG[species]}")
            cols = set(b.columns)
            b.update(out, dict(_output_sql(o, cols) for o in cards[name]["outputs"]))
    _finish(b)
    keep = [c for c in b.columns if c not in DRAWS]
    b.table(OUTPUT_TABLE, keep, f"SELECT {', '.join(keep)} FROM {b.state} ORDER BY mcparticle_id", persistent=True)
    return {"format": "flashsim-sqlamarr-pipeline/1", "flashsim_version": __version__, "sqlamarr": ">=0.0rc7",
            "input": "HepMC2 ASCII (SQLamarr.HepMC2DataLoader), then PVFinder and MCParticleSelector",
            "output_table": OUTPUT_TABLE, "libraries_relative_to": "this file's folder",
            "models": {n: {k: c[k] for k in ("plugin", "function", "n_random", "features", "outputs")}
                       for n, c in cards.items()},
            "steps": b.steps}


def _finish(b: _Builder) -> None:
    """As the chain's post-processing: the isMuon flag (sampled when a probability), muon LLs only with isMuon,
    ``z_ClosestToBeam`` and ``p`` from the reconstructed state."""
    cols = set(b.columns)
    new = {}
    if "isMuon" in cols:
        new["isMuon"] = ("(CASE WHEN s.isMuon IS NULL THEN 0 WHEN s.isMuon > 0 AND s.isMuon < 1 THEN "
                         "(CASE WHEN s.u_mu < s.isMuon THEN 1 ELSE 0 END) WHEN s.isMuon > 0.5 THEN 1 ELSE 0 END)")
    if new:
        b.derive(new)
        cols = set(b.columns)
    new = {}
    for c in ("MuonMuLL", "MuonBgLL"):
        if c in cols and "isMuon" in cols:
            new[c] = f"(CASE WHEN s.isMuon > 0 THEN s.{c} ELSE NULL END)"
    if "qop_ClosestToBeam" in cols and "p" not in cols:
        new["p"] = "1.0 / abs(s.qop_ClosestToBeam)"
    if {"x_ClosestToBeam", "y_ClosestToBeam"} <= cols and "z_ClosestToBeam" not in cols:
        tx, ty = feature_sql("true_tx_ClosestToBeam", cols), feature_sql("true_ty_ClosestToBeam", cols)
        dx = f"(s.x_ClosestToBeam - {feature_sql('true_x_ClosestToBeam', cols)})"
        dy = f"(s.y_ClosestToBeam - {feature_sql('true_y_ClosestToBeam', cols)})"
        new["z_ClosestToBeam"] = (f"{feature_sql('true_z_ClosestToBeam', cols)} - ({dx} * {tx} + {dy} * {ty}) / "
                                  f"({tx} * {tx} + {ty} * {ty})")
    if new:
        b.derive(new)


def write_config(models: str | Path, spec=None, skip: tuple[str, ...] = ()) -> Path:
    """Write ``<models>/sqlamarr_pipeline.json``; returns its path."""
    from flashsim.io.atomic import write_json

    path = Path(models) / CONFIG_NAME
    write_json(path, pipeline_config(models, spec, skip))
    return path


def execute(config: str | Path, hepmc: list[str] | str, db_path: str | Path, seed: int,
            libraries: dict[str, tuple[str, str]] | None = None, keep_stage_outputs: bool = False) -> Path:
    """Load HepMC2 ``hepmc`` files into the SQLite file ``db_path`` and run the pipeline ``config`` in SQLamarr.

    Runs in a child process (SQLamarr aborts its process on SQL errors, and one database per process is its safe
    use); a failure is a ConfigError with the child's last lines. ``libraries`` replaces the (library, function)
    of named models; ``keep_stage_outputs`` also persists every model's raw output as ``raw_<model>``.
    """
    import subprocess
    import sys

    files = [str(f) for f in ([hepmc] if isinstance(hepmc, str | Path) else hepmc)]
    for f in files:
        if not Path(f).exists():
            raise InputError("no such HepMC2 file", file=f)
    cmd = [sys.executable, "-m", "flashsim", "sqlamarr", "--config", str(config), "--input", *files, "--db",
           str(db_path), "--seed", str(seed)]
    if libraries:
        cmd += ["--libraries", json.dumps(libraries)]
    if keep_stage_outputs:
        cmd.append("--keep-stage-outputs")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = [ln for ln in (res.stderr + res.stdout).splitlines() if "WARNING::" not in ln][-12:]
        raise ConfigError(f"SQLamarr pipeline {config} failed (exit {res.returncode}):\n" + "\n".join(tail))
    return Path(db_path)


def execute_here(config: str | Path, hepmc: list[str], db_path: str | Path, seed: int,
                 libraries: dict[str, tuple[str, str]] | None = None, keep_stage_outputs: bool = False) -> Path:
    """:func:`execute` in this process (what the child runs)."""
    import time

    import SQLamarr

    config = Path(config)
    cfg = json.loads(config.read_text())
    db_path = Path(db_path)
    t0 = time.perf_counter()
    if db_path.exists():
        db_path.unlink()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = SQLamarr.SQLite3DB(str(db_path))
    db.seed(seed)  # before loading: the loader's connection needs the generator (else SQLamarr aborts)
    loader = SQLamarr.HepMC2DataLoader(db)
    for i, f in enumerate(hepmc):
        loader.load(str(f), 1, i + 1)
        db.seed(seed)  # loading replaces the connection: seed again (then reruns are bit-identical)
    algos = [SQLamarr.PVFinder(db), SQLamarr.MCParticleSelector(db)]
    for st in cfg["steps"]:
        kind = st["kind"]
        if kind == "TemporaryTable":
            algos.append(SQLamarr.TemporaryTable(db, st["output_table"], st["outputs"], st["query"],
                                                 make_persistent=bool(st.get("persistent"))))
            continue
        lib, fn = (libraries or {}).get(st["model"], (str(config.parent / st["library"]), st["function"]))
        if not Path(lib).exists():
            raise ConfigError(f"{config}: shared object {lib} of model {st['model']} is missing")
        if kind == "GenerativePlugin":
            algos.append(SQLamarr.GenerativePlugin(db, str(lib), fn, st["query"], st["output_table"], st["outputs"],
                                                   int(st["n_random"]), st["references"]))
        elif kind == "Plugin":
            algos.append(SQLamarr.Plugin(db, str(lib), fn, st["query"], st["output_table"], st["outputs"],
                                         st["references"]))
        else:
            raise ConfigError(f"{config}: unknown step kind {kind!r}")
        if keep_stage_outputs:
            algos.append(SQLamarr.TemporaryTable(db, f"raw_{st['model']}", ["mcparticle_id", *st["outputs"]],
                                                 f"SELECT * FROM {st['output_table']}", make_persistent=True))
    t1 = time.perf_counter()
    SQLamarr.Pipeline(algos).execute()
    t2 = time.perf_counter()
    timing = {"load_s": t1 - t0, "pipeline_s": t2 - t1}
    Path(f"{db_path}.timing.json").write_text(json.dumps(timing))  # read by `flashsim bench sqlamarr`
    while algos:  # transformers before the database (SQLamarr's rule)
        del algos[-1]
    del loader
    del db
    return db_path


def read_output(db_path: str | Path, table: str = OUTPUT_TABLE) -> dict:
    """A persistent table of a pipeline's SQLite file as numpy columns (NULL -> NaN)."""
    import sqlite3

    import numpy as np

    con = sqlite3.connect(str(db_path))
    try:
        cur = con.execute(f"SELECT * FROM {_ident(table, 'table')}")
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    out = {}
    for j, n in enumerate(names):
        vals = [r[j] for r in rows]
        if all(isinstance(v, int) for v in vals):
            out[n] = np.asarray(vals, np.int64)
        else:
            out[n] = np.asarray([np.nan if v is None else v for v in vals], np.float64)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=f"models/{CONFIG_NAME}", help="pipeline file written by `flashsim cabi`")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE", help="HepMC2 ASCII file(s)")
    p.add_argument("--db", required=True, help="output SQLite file (table fs_output)")
    p.add_argument("--seed", type=int, default=1, help="seed of SQLamarr's generator")
    p.add_argument("--libraries", help=argparse.SUPPRESS)  # JSON {model: [library, function]} (tests)
    p.add_argument("--keep-stage-outputs", action="store_true", help="persist each model's raw output table")


def run(args: argparse.Namespace) -> int:
    libs = {k: tuple(v) for k, v in json.loads(args.libraries).items()} if args.libraries else None
    out = execute_here(args.config, args.input, args.db, args.seed, libs, args.keep_stage_outputs)
    log.info("SQLamarr pipeline %s -> %s (table %s)", args.config, out, OUTPUT_TABLE)
    return 0
