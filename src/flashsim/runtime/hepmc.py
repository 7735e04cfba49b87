"""HepMC event files (HepMC3 and HepMC2 ASCII, optionally gzipped) in and out, through ``pyhepmc``.

Reading: the final-state (status 1) charged e, mu, pi, K, p of each event become contract rows (production
vertex, momentum, PDG id, charge, the event's primary vertex, the mother's PDG id); photons and every other
final-state particle are counted by PDG id, never turned into tracks. ``nTracks`` / ``nPVs`` come from the
event's named weights of those names when present (as :func:`write` stores them), else ``nTracks`` is the
number of such charged tracks in the event and ``nPVs`` is 1.

Writing (tests, SQLamarr input): contract rows grouped by ``evtNumber``; every event gets a primary vertex with
two beam protons (status 4, which SQLamarr's loader needs), and rows with a ``mother_ID`` hang from a decay
vertex at their origin, the mother (status 2) from the primary vertex (a Lc+ from its Lb0's vertex). Vertices
are written in topological order, so a file reads back in the same particle order in both formats (which
need not be the order of the rows written: the Lb0's muon comes before the Lc+ daughters).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashsim.detector import SPECIES_PDG
from flashsim.errors import InputError
from flashsim.runtime.io import charge_of

TRACKED = frozenset(SPECIES_PDG.values())  # |PDG id| of the particles that become tracks
PHOTON = 22
SUFFIXES = (".hepmc", ".hepmc2", ".hepmc3", ".hepmc.gz", ".hepmc2.gz", ".hepmc3.gz", ".dat")
MASS = {11: 0.51099895, 13: 105.6583755, 211: 139.57039, 321: 493.677, 2212: 938.27208816, 22: 0.0,
        4122: 2286.46, 5122: 5619.60}  # MeV/c^2
WEIGHTS = ("nominal", "nTracks", "nPVs")


def is_hepmc(path: str | Path) -> bool:
    """Whether ``path`` names a HepMC file (by suffix)."""
    return str(path).lower().endswith(SUFFIXES)


# (|mother PDG id|, |PDG id|) -> signal_role of the Lb0 -> Lc+ mu- nu, Lc+ -> p K- pi+ contract (0: other)
ROLES = {(4122, 2212): 1, (4122, 321): 2, (4122, 211): 3, (5122, 13): 4}


def signal_role(pdg: np.ndarray, mother: np.ndarray) -> np.ndarray:
    """The signal contract's role of each particle from its and its mother's PDG ids."""
    a, m = np.abs(np.asarray(pdg)), np.abs(np.asarray(mother))
    role = np.zeros(a.shape, np.int32)
    for (mo, d), r in ROLES.items():
        role[(m == mo) & (a == d)] = r
    return role


@dataclass
class Census:
    """What a HepMC reader saw: events, tracks made, photons and other final-state particles by PDG id."""

    events: int = 0
    tracks: int = 0
    photons: int = 0
    others: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"events": self.events, "tracks": self.tracks, "photons": self.photons,
                "others": {str(k): int(v) for k, v in sorted(self.others.items())}}


def _pv(ev) -> tuple[float, float, float]:
    for v in ev.vertices:
        if any(p.status == 4 for p in v.particles_in):
            pos = v.position
            return pos.x, pos.y, pos.z
    if len(ev.vertices):
        pos = ev.vertices[0].position
        return pos.x, pos.y, pos.z
    return 0.0, 0.0, 0.0


def read(files: list[str] | str, step_size: int = 200_000, max_entries: int | None = None,
         census: Census | None = None, photons: list | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of contract-named generator-level columns (tracks only) from HepMC files; fills ``census``.

    ``photons``: a list that receives each final-state photon as ``(evtNumber, x, y, z, px, py, pz, E)`` (its
    origin vertex, mm, and momentum, MeV) for the ECAL stage (:mod:`flashsim.runtime.ecal`)."""
    import pyhepmc

    census = census if census is not None else Census()
    rows: dict[str, list] = {k: [] for k in ("evtNumber", "nTracks", "nPVs", "mc_x", "mc_y", "mc_z", "mc_px",
                                              "mc_py", "mc_pz", "mcID", "pv_x", "pv_y", "pv_z", "mother_ID")}
    seen = 0

    def flush() -> dict[str, np.ndarray]:
        out = {k: np.asarray(v, np.int64 if k == "evtNumber" else
                             np.int32 if k in ("nTracks", "nPVs", "mcID", "mother_ID") else np.float32)
               for k, v in rows.items()}
        out["mc_charge"] = charge_of(out["mcID"])
        out["signal_role"] = signal_role(out["mcID"], out["mother_ID"])
        for v in rows.values():
            v.clear()
        return out

    for path in [files] if isinstance(files, str | Path) else files:
        try:
            f = pyhepmc.open(str(path))
        except Exception as err:
            raise InputError(f"cannot open as HepMC ({err})", file=str(path)) from err
        with f:
            try:
                for ev in f:
                    if max_entries is not None and seen >= max_entries:
                        break
                    census.events += 1
                    tracks = []
                    for p in ev.particles:
                        if p.status != 1:
                            continue
                        a = abs(p.pid)
                        if a in TRACKED:
                            tracks.append(p)
                        elif a == PHOTON:
                            census.photons += 1
                            if photons is not None:
                                v = p.production_vertex
                                pos = (v.position.x, v.position.y, v.position.z) if v is not None else _pv(ev)
                                m = p.momentum
                                photons.append((ev.event_number, *pos, m.px, m.py, m.pz, m.e))
                        else:
                            census.others[p.pid] += 1
                    if max_entries is not None:
                        tracks = tracks[: max_entries - seen]
                    names = list(ev.run_info.weight_names) if ev.run_info is not None else []
                    w = dict(zip(names, ev.weights, strict=False))
                    n_tracks, n_pvs = int(w.get("nTracks", len(tracks))), int(w.get("nPVs", 1))
                    pv = _pv(ev)
                    for p in tracks:
                        v = p.production_vertex
                        pos = v.position if v is not None else None
                        mothers = list(v.particles_in) if v is not None else []
                        rows["evtNumber"].append(ev.event_number)
                        rows["nTracks"].append(n_tracks)
                        rows["nPVs"].append(n_pvs)
                        for k, val in zip(("mc_x", "mc_y", "mc_z"), (pos.x, pos.y, pos.z) if pos else pv,
                                          strict=True):
                            rows[k].append(val)
                        mom = p.momentum
                        rows["mc_px"].append(mom.px)
                        rows["mc_py"].append(mom.py)
                        rows["mc_pz"].append(mom.pz)
                        rows["mcID"].append(p.pid)
                        rows["mother_ID"].append(mothers[0].pid if mothers and mothers[0].status != 4 else 0)
                        for k, val in zip(("pv_x", "pv_y", "pv_z"), pv, strict=True):
                            rows[k].append(val)
                    census.tracks += len(tracks)
                    seen += len(tracks)
                    if len(rows["mcID"]) >= step_size:
                        yield flush()
            except (RuntimeError, ValueError) as err:
                raise InputError(f"cannot read HepMC events ({err})", file=str(path)) from err
    if rows["mcID"]:
        yield flush()


def write(cols: dict[str, np.ndarray], path: str | Path, fmt: str = "HepMC3", event_info: bool = True) -> Path:
    """Write contract rows as HepMC events (``fmt``: ``HepMC3`` or ``HepMC2``; ``.gz`` compresses).

    ``event_info``: store ``nTracks`` / ``nPVs`` as named event weights (else readers count the tracks)."""
    import pyhepmc

    path = Path(path)
    ri = pyhepmc.GenRunInfo()
    ri.weight_names = list(WEIGHTS)
    evt = np.asarray(cols["evtNumber"])
    order = np.argsort(evt, kind="stable")
    bounds = np.flatnonzero(np.diff(evt[order])) + 1
    get = lambda k, i, d=0.0: float(cols[k][i]) if k in cols else d  # noqa: E731
    with pyhepmc.open(str(path), "w", format=fmt) as f:
        for idx in np.split(order, bounds):
            if not len(idx):
                continue
            i0 = idx[0]
            ev = pyhepmc.GenEvent(pyhepmc.Units.MEV, pyhepmc.Units.MM)
            ev.event_number = int(evt[i0])
            if event_info:
                ev.run_info = ri
                ev.weights = [1.0, get("nTracks", i0, len(idx)), get("nPVs", i0, 1.0)]
            pv = pyhepmc.GenVertex((get("pv_x", i0), get("pv_y", i0), get("pv_z", i0), 0.0))
            for sign in (1, -1):
                pv.add_particle_in(pyhepmc.GenParticle((0.0, 0.0, sign * 3.5e6, 3.5e6), 2212, 4))
            ev.add_vertex(pv)
            groups: dict[tuple, list[int]] = {}
            for i in idx:
                mother = int(cols["mother_ID"][i]) if "mother_ID" in cols else 0
                key = (mother, get("mc_x", i), get("mc_y", i), get("mc_z", i)) if mother else (0,)
                groups.setdefault(key, []).append(int(i))
            decays = {}
            for key, members in groups.items():
                parts = [_particle(cols, i) for i in members]
                if key == (0,):
                    for p in parts:
                        pv.add_particle_out(p)
                    continue
                v = pyhepmc.GenVertex((key[1], key[2], key[3], 0.0))
                for p in parts:
                    v.add_particle_out(p)
                decays[key] = (v, np.sum([[p.momentum.px, p.momentum.py, p.momentum.pz] for p in parts], 0))
            # mothers: a charm baryon from its beauty mother's vertex when the event has one, else from the PV
            beauty = next((k for k in decays if abs(k[0]) // 1000 == 5), None)
            for key in sorted(decays, key=lambda k: abs(k[0]) // 1000 == 5):
                v, mom = decays[key]
                parent = pv
                if beauty is not None and key != beauty:
                    parent = decays[beauty][0]
                    decays[beauty] = (parent, decays[beauty][1] + mom)
                if key == beauty:
                    mom = decays[beauty][1]
                m = MASS.get(abs(key[0]), 0.0)
                mp = pyhepmc.GenParticle((*mom, float(np.sqrt(mom @ mom + m * m))), key[0], 2)
                mp.generated_mass = m
                parent.add_particle_out(mp)
                v.add_particle_in(mp)
            # topological order (mothers' vertices first), as HepMC2 files list them: both formats read back alike
            for key in sorted(decays, key=lambda k: abs(k[0]) // 1000 != 5):
                ev.add_vertex(decays[key][0])
            f.write(ev)
    return path


def _particle(cols: dict[str, np.ndarray], i: int):
    import pyhepmc

    px, py, pz = (float(cols[k][i]) for k in ("mc_px", "mc_py", "mc_pz"))
    pid = int(cols["mcID"][i])
    m = MASS.get(abs(pid), 0.0)
    p = pyhepmc.GenParticle((px, py, pz, float(np.sqrt(px * px + py * py + pz * pz + m * m))), pid, 1)
    p.generated_mass = m
    return p
