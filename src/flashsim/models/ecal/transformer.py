"""Family ``ecal_transformer``: the ECAL encoder-decoder Transformer (events padded, masks).

ONNX: ``x`` float32 [B, L, 5] photons of B events padded to L (x, y [mm], tx, ty, E [MeV]), ``mask`` bool
[B, L] (true for real photons), ``noise`` float32 [B, L, noise_dim + 1] standard normal -> ``y`` float32
[B, L, 5] = (on, cluster_x [mm], cluster_y [mm], cluster_E [MeV], p_on), zero on padded slots.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from flashsim.io import ecal as D
from flashsim.models.ecal import core as C
from flashsim.models.ecal.family import ECAL_SCHEMA, EcalFamily
from flashsim.models.ecal.transformer_net import EcalTransformer

INFER_SLOTS = 32768  # padded slots (B * L) per inference call


class Family(EcalFamily):
    SCHEMA: ClassVar[dict[str, Any]] = {
        **ECAL_SCHEMA,
        "heads": {"type": "integer", "minimum": 1, "default": 4},
        "enc_layers": {"type": "integer", "minimum": 1, "default": 2},
        "dec_layers": {"type": "integer", "minimum": 1, "default": 2},
    }

    def build(self, features: C.PhotonFeatures, output: C.SlotOutput) -> EcalTransformer:
        c = self.cfg
        return EcalTransformer(c["width"], c["heads"], c["enc_layers"], c["dec_layers"], c["noise_dim"], features,
                               output)

    def batches(self, data, features, target, rng, train: bool) -> list[dict[str, torch.Tensor]]:
        size = self.cfg["batch_photons"] * (1 if train else 4)
        return [C.padded_batch(data, g, features, target)
                for g in C.size_sorted_batches(data.events.n_photons, size, rng)]

    def run(self, fn, ev: D.Events, noise: np.ndarray) -> np.ndarray:
        y = np.zeros((len(ev.photons), 5), dtype=np.float32)
        start = ev.photon_start
        for group in C.size_sorted_batches(ev.n_photons, INFER_SLOTS, np.random.default_rng(0)):
            sub = ev.select(group)
            x, mask = C.pad_events(sub)
            rows = D.ranges(start[group], ev.n_photons[group])
            nz = np.zeros((*mask.shape, self.noise_dim), dtype=np.float32)
            nz[mask] = noise[rows]
            y[rows] = fn(x, mask, nz)[mask]
        return y

    def onnx_io(self):
        ev = self.example_events()
        x, mask = C.pad_events(ev)
        args = (torch.as_tensor(x), torch.as_tensor(mask), torch.zeros(*mask.shape, self.noise_dim))
        axes = {n: {0: "B", 1: "L"} for n in ("x", "mask", "noise", "y")}
        return args, ["x", "mask", "noise"], axes

    def io_inputs(self) -> list[dict]:
        return [self.photon_input(["B", "L", 5], note="photons of B events padded to the largest event L"),
                {"name": "mask", "shape": ["B", "L"], "dtype": "bool", "note": "true for real photons"},
                {"name": "noise", "shape": ["B", "L", self.noise_dim], "dtype": "float32",
                 "distribution": "standard normal", "note": "last column: slot existence (on if Phi(z) < p_on)"}]

    def io_outputs(self) -> list[dict]:
        out = super().io_outputs()
        out[0]["shape"] = ["B", "L", 5]
        out[0]["note"] = "zero on padded slots"
        return out
