"""Family ``ecal_gnn``: the ECAL heterogeneous graph network (photon and candidate-cluster nodes, no padding).

ONNX: ``x`` float32 [N, 5] photons of any number of events (x, y [mm], tx, ty, E [MeV]), ``noise`` float32
[N, noise_dim + 1] standard normal, ``edge_index`` int64 [2, E] (src, dst) radius edges between photons of the
same event, built by :func:`flashsim.io.ecal.radius_edges` (the graph's preprocessing) -> ``y`` float32
[N, 5] = (on, cluster_x [mm], cluster_y [mm], cluster_E [MeV], p_on), one candidate cluster per photon.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from flashsim.io import ecal as D
from flashsim.models.ecal import core as C
from flashsim.models.ecal.family import ECAL_SCHEMA, EcalFamily
from flashsim.models.ecal.gnn_net import EcalGNN

INFER_PHOTONS = 65536  # photons per inference call


class Family(EcalFamily):
    SCHEMA: ClassVar[dict[str, Any]] = {**ECAL_SCHEMA, "layers": {"type": "integer", "minimum": 1, "default": 3}}

    def build(self, features: C.PhotonFeatures, output: C.SlotOutput) -> EcalGNN:
        c = self.cfg
        return EcalGNN(c["width"], c["layers"], c["noise_dim"], features, output)

    def batches(self, data, features, target, rng, train: bool) -> list[dict[str, torch.Tensor]]:
        order = rng.permutation(len(data.events)) if train else None
        size = self.cfg["batch_photons"] * (1 if train else 4)
        return [C.graph_batch(data, g, features, target)
                for g in C.event_batches(data.events.n_photons, size, order)]

    def run(self, fn, ev: D.Events, noise: np.ndarray) -> np.ndarray:
        y = np.zeros((len(ev.photons), 5), dtype=np.float32)
        start = ev.photon_start
        for group in C.event_batches(ev.n_photons, INFER_PHOTONS):
            lo, hi = start[group[0]], start[group[-1]] + ev.n_photons[group[-1]]
            sub = ev.select(group)
            y[lo:hi] = fn(sub.photons.astype(np.float32), noise[lo:hi], D.radius_edges(sub))
        return y

    def onnx_io(self):
        ev = self.example_events()
        args = (torch.as_tensor(ev.photons, dtype=torch.float32), torch.zeros(5, self.noise_dim),
                torch.as_tensor(D.radius_edges(ev)))
        axes = {"x": {0: "N"}, "noise": {0: "N"}, "edge_index": {1: "E"}, "y": {0: "N"}}
        return args, ["x", "noise", "edge_index"], axes

    def io_inputs(self) -> list[dict]:
        return [self.photon_input(["N", 5]),
                {"name": "noise", "shape": ["N", self.noise_dim], "dtype": "float32",
                 "distribution": "standard normal", "note": "last column: slot existence (on if Phi(z) < p_on)"},
                {"name": "edge_index", "shape": [2, "E"], "dtype": "int64",
                 "note": f"src, dst photon rows of the same event closer than {D.EDGE_RADIUS} cells, both "
                         "directions (flashsim.io.ecal.radius_edges)"}]
