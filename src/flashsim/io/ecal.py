"""ECAL data for the set-to-set models: events of photons and clusters, geometric matching, targets, edges.

Both ECAL models (GNN and Transformer) see the same representation. Each generated photon is a *candidate slot*
for one reconstructed cluster: a slot is "on" when a reference cluster is geometrically matched to its photon,
and then carries the cluster relative to the photon, ``t = ((cx - px) / cell, (cy - py) / cell, log(Ec / Ep))``
with ``cell`` the ECAL cell size at the photon. A model predicts, per slot, the probability to be on and a
sample of ``t``; the clusters of an event are the slots that are on, so n photons give m <= n clusters.

Geometric matching (no truth needed, so it works on real detailed simulation too): clusters in decreasing energy
take the most energetic still-free photon of their event within ``radius`` cells of the cluster position.

Cell sizes come from the ECAL geometry the events were recorded in (``Events.geometry``, a
:class:`flashsim.detector.EcalGeometry`: the configured ``detector.ecal`` where a model reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashsim.detector import LHCB_ECAL, EcalGeometry

PHOTON_FEATURES = ("photon_x", "photon_y", "photon_tx", "photon_ty", "photon_E")
PHOTON_UNITS = ("mm", "mm", "1", "1", "MeV")
CLUSTER_FEATURES = ("cluster_x", "cluster_y", "cluster_E")
CLUSTER_UNITS = ("mm", "mm", "MeV")
TARGETS = ("dx_cell", "dy_cell", "log_E_ratio")
MATCH_RADIUS = 2.0  # cells
EDGE_RADIUS = 4.0  # cells: photons closer than this are connected (context for merging decisions)
CONTEXT = ("nn_distance", "nn_log_E_ratio", "near_E_ratio")


@dataclass
class Events:
    """Flat photons [N, 5] (x, y, tx, ty, E) and clusters [M, 3] (x, y, E) of B events (event-contiguous) on the
    face of the ECAL ``geometry``."""

    n_photons: np.ndarray
    photons: np.ndarray
    n_clusters: np.ndarray
    clusters: np.ndarray
    geometry: EcalGeometry = field(default=LHCB_ECAL)

    def __post_init__(self) -> None:
        self.n_photons = np.asarray(self.n_photons, dtype=np.int64)
        self.n_clusters = np.asarray(self.n_clusters, dtype=np.int64)
        self.photons = np.asarray(self.photons, dtype=np.float64).reshape(-1, len(PHOTON_FEATURES))
        self.clusters = np.asarray(self.clusters, dtype=np.float64).reshape(-1, len(CLUSTER_FEATURES))
        if self.n_photons.sum() != len(self.photons) or self.n_clusters.sum() != len(self.clusters):
            raise ValueError("photon/cluster counts do not match the flat arrays")

    def __len__(self) -> int:
        return len(self.n_photons)

    @property
    def photon_start(self) -> np.ndarray:
        return np.cumsum(self.n_photons) - self.n_photons

    @property
    def cluster_start(self) -> np.ndarray:
        return np.cumsum(self.n_clusters) - self.n_clusters

    @property
    def photon_event(self) -> np.ndarray:
        return np.repeat(np.arange(len(self)), self.n_photons)

    @property
    def cluster_event(self) -> np.ndarray:
        return np.repeat(np.arange(len(self)), self.n_clusters)

    def select(self, events: np.ndarray) -> Events:
        """The sub-sample of the given event indices (in that order)."""
        events = np.asarray(events, dtype=np.int64)
        return Events(self.n_photons[events], self.photons[ranges(self.photon_start[events], self.n_photons[events])],
                      self.n_clusters[events],
                      self.clusters[ranges(self.cluster_start[events], self.n_clusters[events])], self.geometry)

    @classmethod
    def from_columns(cls, columns, geometry: EcalGeometry = LHCB_ECAL) -> Events:
        """From contract-named columns (awkward jagged arrays or lists of arrays), e.g. a detsim chunk."""
        import awkward as ak

        n_p = np.asarray(ak.num(ak.Array(columns["photon_E"])), dtype=np.int64)
        n_c = np.asarray(ak.num(ak.Array(columns["cluster_E"])), dtype=np.int64)
        photons = np.stack([ak.to_numpy(ak.flatten(ak.Array(columns[c]))) for c in PHOTON_FEATURES], axis=1)
        clusters = np.stack([ak.to_numpy(ak.flatten(ak.Array(columns[c]))) for c in CLUSTER_FEATURES], axis=1)
        return cls(n_p, photons, n_c, clusters, geometry)

    @classmethod
    def from_parquet(cls, path: str | Path, geometry: EcalGeometry = LHCB_ECAL) -> Events:
        """From a prepared ECAL Parquet file (one row per event, list columns) recorded in ``geometry``."""
        import awkward as ak

        from flashsim.errors import InputError

        try:
            arr = ak.from_parquet(str(path), columns=list(PHOTON_FEATURES + CLUSTER_FEATURES))
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read ECAL events: {err}", file=str(path)) from err
        ev = cls.from_columns({c: arr[c] for c in PHOTON_FEATURES + CLUSTER_FEATURES}, geometry)
        bad = ~np.isfinite(ev.photons).all(1)
        if bad.any():
            col = PHOTON_FEATURES[int(np.argmax((~np.isfinite(ev.photons[bad])).any(0)))]
            raise InputError(f"{int(bad.sum())} photons with non-finite values", file=str(path), branch=col)
        return ev


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c)."""
    total = int(counts.sum())
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total) - first)


def event_pairs(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (a < b) within each event of flat items grouped as [starts, starts + counts)."""
    ends = np.repeat(starts + counts, counts)
    idx = np.arange(len(ends))
    npair = ends - idx - 1
    a = np.repeat(idx, npair)
    first = np.repeat(np.cumsum(npair) - npair, npair)
    b = a + 1 + (np.arange(len(a)) - first)
    return a, b


def within_event_pairs(counts_a: np.ndarray, counts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) index pairs of items of set a and set b in the same event (flat, event-contiguous)."""
    counts_a, counts_b = np.asarray(counts_a, np.int64), np.asarray(counts_b, np.int64)
    start_b = np.cumsum(counts_b) - counts_b
    per_a = np.repeat(counts_b, counts_a)  # partners of each a item
    i = np.repeat(np.arange(int(counts_a.sum())), per_a)
    first = np.repeat(np.cumsum(per_a) - per_a, per_a)
    j = np.repeat(np.repeat(start_b, counts_a), per_a) + (np.arange(len(i)) - first)
    return i, j


def match(ev: Events, radius: float = MATCH_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Geometric matching: ``(slot_cluster [N], cluster_slot [M])``, global indices, -1 when unmatched."""
    ci, pj = within_event_pairs(ev.n_clusters, ev.n_photons)
    c, p = ev.clusters, ev.photons
    cell = ev.geometry.cell_size(p[pj, 0], p[pj, 1])
    near = np.hypot(c[ci, 0] - p[pj, 0], c[ci, 1] - p[pj, 1]) < radius * cell
    ci, pj = ci[near], pj[near]
    # rank of each cluster within its event by decreasing energy
    order = np.lexsort((-c[:, 2], ev.cluster_event))
    rank = np.empty(len(c), dtype=np.int64)
    rank[order] = np.arange(len(c)) - np.repeat(ev.cluster_start, ev.n_clusters)
    # candidates ordered by cluster, then by decreasing photon energy
    cand = np.lexsort((-p[pj, 4], ci))
    ci, pj = ci[cand], pj[cand]
    slot_cluster = np.full(len(p), -1, dtype=np.int64)
    cluster_slot = np.full(len(c), -1, dtype=np.int64)
    for r in range(int(ev.n_clusters.max(initial=0))):
        m = (rank[ci] == r) & (slot_cluster[pj] < 0)
        if not m.any():
            continue
        first_c, first = np.unique(ci[m], return_index=True)
        chosen = pj[m][first]
        slot_cluster[chosen] = first_c
        cluster_slot[first_c] = chosen
    return slot_cluster, cluster_slot


def targets(ev: Events, slot_cluster: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(on [N] float, t [N, 3])``: whether each slot is on and its cluster relative to the photon (0 if off)."""
    p = ev.photons
    on = slot_cluster >= 0
    t = np.zeros((len(p), 3))
    c = ev.clusters[slot_cluster[on]]
    cell = ev.geometry.cell_size(p[on, 0], p[on, 1])
    t[on, 0] = (c[:, 0] - p[on, 0]) / cell
    t[on, 1] = (c[:, 1] - p[on, 1]) / cell
    t[on, 2] = np.log(np.maximum(c[:, 2], 1e-3) / p[on, 4])
    return on.astype(np.float32), t.astype(np.float32)


def slots_to_clusters(photons: np.ndarray, t: np.ndarray, geometry: EcalGeometry = LHCB_ECAL) -> np.ndarray:
    """Invert :func:`targets`: cluster (x, y, E) [N, 3] from photons [N, 5] and relative ``t`` [N, 3]."""
    cell = geometry.cell_size(photons[:, 0], photons[:, 1])
    return np.stack([photons[:, 0] + t[:, 0] * cell, photons[:, 1] + t[:, 1] * cell,
                     photons[:, 4] * np.exp(t[:, 2])], axis=1)


def radius_edges(ev_or_counts, photons: np.ndarray | None = None, radius: float = EDGE_RADIUS,
                 geometry: EcalGeometry | None = None) -> np.ndarray:
    """Directed edges [2, E] (both directions, src row 0, dst row 1) between photons of the same event closer
    than ``radius`` cells (the larger of the two cells); sorted by destination. int64. The cells are those of
    the events' geometry (of ``geometry`` for counts and photons, default LHCb-like)."""
    if isinstance(ev_or_counts, Events):
        counts, photons, geometry = ev_or_counts.n_photons, ev_or_counts.photons, ev_or_counts.geometry
    else:
        counts = np.asarray(ev_or_counts, dtype=np.int64)
    geometry = geometry or LHCB_ECAL
    counts = np.asarray(counts, dtype=np.int64)
    a, b = event_pairs(np.cumsum(counts) - counts, counts)
    x, y = photons[:, 0], photons[:, 1]
    cell = geometry.cell_size(x, y)
    near = np.hypot(x[a] - x[b], y[a] - y[b]) < radius * np.maximum(cell[a], cell[b])
    a, b = a[near], b[near]
    src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    order = np.lexsort((src, dst))
    return np.stack([src[order], dst[order]]).astype(np.int64)


def context(photons: np.ndarray, edges: np.ndarray, merge_radius: float = 1.5,
            geometry: EcalGeometry = LHCB_ECAL) -> np.ndarray:
    """Per-photon neighbourhood summary [N, 3] for the discriminator: nearest-neighbour distance (cells, capped
    at the edge radius), log energy ratio to it, and the energy within ``merge_radius`` cells over own energy."""
    n = len(photons)
    src, dst = edges
    cell = np.maximum(geometry.cell_size(photons[src, 0], photons[src, 1]),
                      geometry.cell_size(photons[dst, 0], photons[dst, 1]))
    d = np.hypot(photons[src, 0] - photons[dst, 0], photons[src, 1] - photons[dst, 1]) / cell
    out = np.zeros((n, 3))
    out[:, 0] = EDGE_RADIUS
    if len(src):
        order = np.lexsort((d, dst))
        first = np.unique(dst[order], return_index=True)[1]
        nn_dst, nn_src, nn_d = dst[order][first], src[order][first], d[order][first]
        out[nn_dst, 0] = nn_d
        out[nn_dst, 1] = np.log(photons[nn_src, 4] / photons[nn_dst, 4])
        close = d < merge_radius
        np.add.at(out[:, 2], dst[close], photons[src[close], 4] / photons[dst[close], 4])
    return out

