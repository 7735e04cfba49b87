"""The ECAL stage of ``flashsim simulate``: generator-level photons -> reconstructed clusters.

Each final-state photon flies in a straight line from its origin vertex to the ECAL face (``z`` of the configured
``detector.ecal`` geometry), giving the models' inputs (x, y [mm], tx, ty, E [MeV]; see
:mod:`flashsim.io.ecal`). Photons that miss the face (beam hole, outside the outer region, or going backwards)
are counted and dropped. The configured model (``runtime.ecal``: ``ecal_gnn`` or ``ecal_transformer``) runs
through onnxruntime with standard-normal noise from the chain's seed; the clusters are the slots that are on.

Photons come from HepMC input only (ROOT samples and the particle gun hold none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flashsim.detector import EcalGeometry
from flashsim.errors import ConfigError
from flashsim.io.ecal import radius_edges

ECAL_MODELS = ("ecal_gnn", "ecal_transformer")
TREE = "Calo"  # the data contract's ecal tree
PHOTON_COLUMNS = ("evtNumber", "x", "y", "z", "px", "py", "pz", "E")


@dataclass
class EcalCensus:
    """Photons seen by the ECAL stage: on the face (simulated), out of acceptance (dropped), clusters made."""

    photons: int = 0
    in_acceptance: int = 0
    clusters: int = 0
    model: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"photons": self.photons, "in_acceptance": self.in_acceptance,
                "out_of_acceptance": self.photons - self.in_acceptance, "clusters": self.clusters}


def to_face(photons: np.ndarray, geometry: EcalGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Photons [N, 8] (``PHOTON_COLUMNS``) -> their (x, y, tx, ty, E) [N, 5] on the ECAL face and the mask of
    those inside the acceptance (forward, on the face, outside the beam hole)."""
    p = np.asarray(photons, dtype=np.float64).reshape(-1, len(PHOTON_COLUMNS))
    pz = p[:, 6]
    fwd = pz > 0
    safe = np.where(fwd, pz, 1.0)
    tx, ty = p[:, 4] / safe, p[:, 5] / safe
    dz = geometry.z - p[:, 3]
    x, y = p[:, 1] + tx * dz, p[:, 2] + ty * dz
    face = np.stack([x, y, tx, ty, p[:, 7]], axis=1)
    ok = fwd & (dz > 0) & (p[:, 7] > 0) & geometry.in_acceptance(x, y)
    return face, ok


class EcalModel:
    """An exported ECAL model (ONNX): GNN (``x``, ``noise``, ``edge_index``) or Transformer (``x``, ``mask``,
    ``noise``), told apart by its inputs; ``y`` [..., 5] = (on, cluster x, y, E, p_on) per photon."""

    def __init__(self, onnx_path: str | Path, geometry: EcalGeometry, threads: int = 0) -> None:
        import onnxruntime as ort

        from flashsim.export import session_options

        self.path, self.geometry = Path(onnx_path), geometry
        self.session = ort.InferenceSession(str(onnx_path), session_options(threads, False),
                                            providers=["CPUExecutionProvider"])
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if "edge_index" in inputs:
            self.kind = "gnn"
        elif "mask" in inputs:
            self.kind = "transformer"
        else:
            raise ConfigError(f"{onnx_path}: not an ECAL model (inputs {sorted(inputs)}: need edge_index or mask)")
        dim = inputs.get("noise", [None])[-1]
        if not isinstance(dim, int):
            raise ConfigError(f"{onnx_path}: the ECAL model's noise input needs a fixed width")
        self.noise_dim = dim

    def run(self, counts: np.ndarray, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``y`` [N, 5] for flat, event-contiguous photons [N, 5] of events with ``counts`` photons each."""
        x = np.ascontiguousarray(photons, dtype=np.float32)
        noise = rng.standard_normal((len(x), self.noise_dim)).astype(np.float32)
        if not len(x):
            return np.zeros((0, 5), np.float32)
        if self.kind == "gnn":
            edges = radius_edges(counts, x.astype(np.float64), geometry=self.geometry)
            return self.session.run(["y"], {"x": x, "noise": noise, "edge_index": edges})[0]
        counts = np.asarray(counts, np.int64)
        length = max(int(counts.max(initial=0)), 1)
        mask = np.arange(length)[None, :] < counts[:, None]
        xp = np.zeros((len(counts), length, 5), np.float32)
        nz = np.zeros((len(counts), length, self.noise_dim), np.float32)
        xp[mask], nz[mask] = x, noise
        return self.session.run(["y"], {"x": xp, "mask": mask, "noise": nz})[0][mask]


def resolve_model(name: str, source: str, skip: tuple[str, ...]):
    """The ModelRef of the configured ECAL model (``runtime.ecal``), None when ``none`` or skipped (``--skip
    ecal`` or its name); ConfigError when configured but missing."""
    from flashsim.runtime.models import available

    if name in ("none", "", None) or "ecal" in skip or name in skip:
        return None
    if name not in ECAL_MODELS:
        raise ConfigError(f"runtime.ecal: {name!r} is not an ECAL model (one of {', '.join(ECAL_MODELS)}, or none)")
    refs = available([name], source)
    if name not in refs:
        raise ConfigError(f"runtime.ecal: no model {name} in {source} (train/export it, or run without it: "
                          "--skip ecal)")
    return refs[name]


def card_geometry(ref, configured: EcalGeometry) -> EcalGeometry:
    """The geometry the model was trained in (its card's ``x`` input ``detector.ecal``), which must be the
    configured one: a ConfigError otherwise. Cards without it (hand-made models) take the configured one."""
    inputs = ref.card.get("inputs") if isinstance(ref.card, dict) else None
    x = next((e for e in inputs if isinstance(e, dict) and e.get("name") == "x"), {}) \
        if isinstance(inputs, list) else {}
    baked = (x.get("detector") or {}).get("ecal")
    if baked is None:
        return configured
    geo = EcalGeometry.from_dict(baked, where=f"{ref.name} model card detector.ecal")
    if geo != configured:
        raise ConfigError(f"runtime.ecal: {ref.name} was trained for another ECAL geometry than detector.ecal "
                          f"(card {geo.to_dict()} vs {configured.to_dict()}); retrain it or fix detector.ecal")
    return geo


def simulate(model: EcalModel, photons: list, seed: int, census: EcalCensus) -> dict[str, np.ndarray]:
    """The ``Calo`` tree of the ``photons`` (rows of ``PHOTON_COLUMNS``) in the data contract's ``ecal`` layout:
    one entry per event with photons in acceptance, photons on the face by decreasing energy, the clusters (slots
    that are on, in photon order) and ``photon_clusterIndex`` (the photon's cluster in the event's list, -1 if
    none). Flat arrays plus the per-event counts ``nPhotons`` / ``nClusters`` (see :func:`write`)."""
    from flashsim.seeding import stream_key

    p = np.asarray(photons, dtype=np.float64).reshape(-1, len(PHOTON_COLUMNS))
    face, ok = to_face(p, model.geometry)
    census.photons += len(p)
    census.in_acceptance += int(ok.sum())
    evt, face = p[ok, 0].astype(np.int64), face[ok]
    order = np.lexsort((-face[:, 4], evt))
    evt, face = evt[order], face[order]
    events, counts = np.unique(evt, return_counts=True)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream_key("simulate_ecal")])))
    y = model.run(counts, face, rng)
    on = y[:, 0] > 0.5
    n_clusters = np.bincount(np.repeat(np.arange(len(events)), counts)[on], minlength=len(events))
    start = np.repeat(np.cumsum(n_clusters) - n_clusters, counts)
    rank = np.cumsum(on) - 1 - start  # the slot's cluster index within its event
    census.clusters += int(on.sum())
    f32 = np.float32
    return {"evtNumber": events, "nPhotons": counts.astype(np.int32),
            "photon_x": face[:, 0].astype(f32), "photon_y": face[:, 1].astype(f32),
            "photon_tx": face[:, 2].astype(f32), "photon_ty": face[:, 3].astype(f32),
            "photon_E": face[:, 4].astype(f32), "photon_clusterIndex": np.where(on, rank, -1).astype(np.int32),
            "nClusters": n_clusters.astype(np.int32), "cluster_x": y[on, 1].astype(f32),
            "cluster_y": y[on, 2].astype(f32), "cluster_E": y[on, 3].astype(f32)}


def write(file, cols: dict[str, np.ndarray]) -> None:
    """Write :func:`simulate`'s columns as the tree ``TREE`` of the open uproot ``file`` (jagged per event)."""
    import awkward as ak

    def group(prefix: str, count: str) -> ak.Array:
        names = [k for k in cols if k.startswith(prefix)]
        return ak.unflatten(ak.zip({k[len(prefix):]: cols[k] for k in names}), cols[count])

    data = {"evtNumber": cols["evtNumber"], "photon": group("photon_", "nPhotons"),
            "cluster": group("cluster_", "nClusters")}
    counters = {"photon": "nPhotons", "cluster": "nClusters"}
    file.mktree(TREE, {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in data.items()},
                counter_name=lambda name: counters.get(name, f"n{name}"))
    file[TREE].extend(data)
