"""Shared family code of the ECAL set-to-set models (``ecal_gnn``, ``ecal_transformer``).

Data are whole events (:class:`flashsim.io.ecal.Events` read from the prepared ECAL Parquet), not
rows: ``frame(split, n)`` returns events, ``validation_rows`` counts events. The exported graph maps the photons
of any number of events (and per-photon standard-normal ``noise``) to one candidate cluster per photon,
``y = (on, cluster_x, cluster_y, cluster_E, p_on)``; a subclass defines the architecture, how events are batched
(flat graph or padded) and the ONNX inputs. Parity is checked on groups of 1, a few, and many events.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from flashsim.detector import EcalGeometry, ecal_geometry
from flashsim.errors import ConfigError, GateError, InputError
from flashsim.io import ecal as D
from flashsim.models.ecal import core as C
from flashsim.models.torch_base import TORCH_SCHEMA, TorchFamily
from flashsim.preprocessing import QuantileTransform
from flashsim.validation import ecal as ecal_validation

log = logging.getLogger(__name__)

ECAL_SCHEMA: dict[str, Any] = {
    "checkpoint_every": TORCH_SCHEMA["checkpoint_every"],
    "epochs": {"type": "integer", "minimum": 1, "default": 15},
    "lr": {"type": "number", "exclusiveMinimum": 0, "default": 2e-3},
    "width": {"type": "integer", "minimum": 4, "default": 48},
    "noise_dim": {"type": "integer", "minimum": 3, "default": 4,
                  "description": "latent size of the cluster generator (the noise input has one more column, "
                                 "which decides whether a slot is on)"},
    "lr_disc": {"type": "number", "exclusiveMinimum": 0, "default": 1e-3},
    "disc_width": {"type": "integer", "minimum": 4, "default": 64},
    "batch_photons": {"type": "integer", "minimum": 64, "default": 4096,
                      "description": "photons (padded slots for the Transformer) per training batch"},
    "mse_weight": {"type": "number", "minimum": 0, "default": 1.0},
    "mse_weights": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 3, "maxItems": 3,
                    "default": [1.0, 1.0, 1.0], "description": "per-target MSE weights (dx, dy, log E ratio)"},
    "adv_weight": {"type": "number", "minimum": 0, "default": 1.0},
    "energy_weight": {"type": "number", "minimum": 0, "default": 1.0,
                      "description": "weight of the optional energy-score term (two samples per matched slot)"},
    "n_knots": {"type": "integer", "minimum": 2, "default": 64,
                "description": "knots of the target quantile transform (inverted inside the graph)"},
    "max_events": {"type": ["integer", "null"], "minimum": 10, "default": None,
                   "description": "use at most this many training events"},
    "parity_events": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
                      "default": [1, 7, 100, 1000], "description": "event-group sizes of the parity check"},
}


class EcalFamily(TorchFamily):
    task = "generator"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    SCHEMA: ClassVar[dict[str, Any]] = ECAL_SCHEMA
    module: torch.nn.Module

    @property
    def noise_dim(self) -> int:  # type: ignore[override]
        return int(self.cfg["noise_dim"]) + 1

    @property
    def geometry(self) -> EcalGeometry:
        """The configured ECAL geometry (``params.yaml`` ``detector.ecal``), baked into the exported graph."""
        return ecal_geometry(self.spec.params)

    # ------------------------------------------------------------ architecture (subclass)
    def build(self, features: C.PhotonFeatures, output: C.SlotOutput) -> torch.nn.Module:
        raise NotImplementedError

    def batches(self, data: C.SlotData, features: C.PhotonFeatures, target: QuantileTransform, rng,
                train: bool) -> list:
        raise NotImplementedError

    def run(self, fn, ev: D.Events, noise: np.ndarray) -> np.ndarray:
        """Slot outputs y [N, 5] of all photons of ``ev`` via ``fn`` (torch module or ONNX session runner)."""
        raise NotImplementedError

    def onnx_io(self) -> tuple[tuple, list[str], dict]:
        """(example inputs, input names, dynamic axes) for the export."""
        raise NotImplementedError

    # ------------------------------------------------------------ data
    def frame(self, split: str, max_rows: int | None = None) -> D.Events:  # type: ignore[override]
        path = self.spec.prepared(split)
        if not path.exists():
            raise InputError(f"prepared data missing (run `flashsim prepare {self.spec.sample}`)", file=str(path))
        ev = D.Events.from_parquet(path, self.geometry)
        if max_rows is not None and len(ev) > max_rows:
            ev = ev.select(np.arange(max_rows))
        return ev

    @property
    def feature_names(self) -> list[str]:
        return list(D.PHOTON_FEATURES)

    def output_names(self) -> list[str]:
        return ["on", *D.CLUSTER_FEATURES, "p_on"]

    def output_units(self) -> list[str]:
        return ["1", *D.CLUSTER_UNITS, "1"]

    def photon_input(self, shape: list, **extra) -> dict:
        """The card's ``x`` input: the photon columns and the ECAL geometry (baked into the graph) they are in."""
        return {"name": "x", "shape": shape, "dtype": "float32",
                "columns": [{"name": n, "unit": u} for n, u in zip(D.PHOTON_FEATURES, D.PHOTON_UNITS, strict=True)],
                **extra, "detector": {"ecal": self.geometry.to_dict()}}

    def example_events(self) -> D.Events:
        """Two small events (the example inputs of the ONNX export)."""
        return D.Events([3, 2], np.array([[300.0, 400, 0.02, 0.03, 5000], [340, 410, 0.02, 0.03, 2000],
                                          [-900, 50, -0.07, 0.0, 800], [1500, -700, 0.1, -0.05, 3000],
                                          [1550, -690, 0.1, -0.05, 900]]), [0, 0], np.empty((0, 3)), self.geometry)

    # ------------------------------------------------------------ training
    def fit(self, ctx) -> dict:
        device = self.setup()
        tr = self.frame("train", self.cfg["max_events"])
        va = self.frame("val", self.cfg["max_events"])
        data_tr, data_va = C.SlotData.build(tr), C.SlotData.build(va)
        geometry = self.geometry
        features = C.PhotonFeatures.fit(tr.photons, geometry)
        target = data_tr.target_transform(self.cfg["n_knots"])
        self.module = self.build(features, C.SlotOutput(target, geometry))
        rng = np.random.default_rng(self.spec.seed)
        train_b = self.batches(data_tr, features, target, rng, True)
        val_b = self.batches(data_va, features, target, rng, False)
        c = self.cfg
        cfg = C.TrainConfig(epochs=c["epochs"], lr=c["lr"], lr_disc=c["lr_disc"], disc_width=c["disc_width"],
                            loss=C.LossConfig(c["mse_weight"], tuple(c["mse_weights"]), c["adv_weight"],
                                              c["energy_weight"]))
        history = C.fit(self.module, train_b, val_b, cfg, device=device, seed=self.spec.seed,
                        checkpointer=self.checkpointer(), ctx=ctx, desc=self.spec.name)
        self.save({"state": self.module.state_dict(), "features": (features.mean.numpy(), features.std.numpy()),
                   "target": target.state(), "geometry": geometry.to_dict()})
        return {"events": len(tr), "photons": int(tr.n_photons.sum()), "val_events": len(va),
                "slots_on_fraction": float(data_tr.on.mean()), "history": history, "device": str(device),
                "val_loss": history[-1]["val_loss"]}

    def load(self) -> None:
        s = self.load_payload()
        geometry = self.geometry
        if s.get("geometry") is not None and EcalGeometry.from_dict(s["geometry"]) != geometry:
            raise ConfigError(f"models/{self.spec.name}: trained for another ECAL geometry than params.yaml "
                              f"detector.ecal; retrain it (`flashsim train {self.spec.name}`)")
        self.module = self.build(C.PhotonFeatures(*s["features"], geometry),
                                 C.SlotOutput(QuantileTransform.from_state(s["target"]), geometry))
        self.module.load_state_dict(s["state"])
        self.module.eval()

    # ------------------------------------------------------------ inference
    def torch_fn(self):
        module = self.module.eval()

        def fn(*arrays: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(*(torch.as_tensor(a) for a in arrays)).numpy()

        return fn

    @staticmethod
    def onnx_fn(session):
        names = [i.name for i in session.get_inputs()]

        def fn(*arrays: np.ndarray) -> np.ndarray:
            return session.run(["y"], dict(zip(names, arrays, strict=True)))[0]

        return fn

    def noise_for(self, ev: D.Events, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((len(ev.photons), self.noise_dim)).astype(np.float32)

    def predict(self, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Native prediction for photons ``x`` [N, 5] of ONE event (the row API of the other families)."""
        ev = D.Events([len(x)], x, [0], np.empty((0, 3)), self.geometry)
        return self.run(self.torch_fn(), ev, noise if noise is not None else self.noise_for(ev, self.spec.seed))

    def predict_events(self, ev: D.Events, noise: np.ndarray, onnx_path: Path | None = None) -> np.ndarray:
        if onnx_path is None:
            return self.run(self.torch_fn(), ev, noise)
        from flashsim.export import ort_session

        return self.run(self.onnx_fn(ort_session(onnx_path, threads=0)), ev, noise)

    def to_onnx(self, path: Path) -> None:
        import io

        from flashsim.export import write_model_bytes

        args, names, axes = self.onnx_io()
        buf = io.BytesIO()
        with torch.no_grad():
            torch.onnx.export(self.module.eval().cpu(), args, buf, input_names=names, output_names=["y"],
                              dynamic_axes=axes, opset_version=17, dynamo=False, do_constant_folding=True)
        write_model_bytes(buf.getvalue(), path)

    # ------------------------------------------------------------ parity
    def parity(self, onnx_path: Path) -> dict:
        """Torch vs onnxruntime on test-event groups of several sizes; GateError above the tolerance.

        Continuous outputs must agree within ``atol + rtol |torch|``; the on flag must agree except where the
        existence noise sits within 1e-5 of the probability (a float rounding tie)."""
        from flashsim.export import ort_session

        tol = self.cfg["parity"]
        sizes = list(self.cfg["parity_events"])
        test = self.frame("test", max(sizes) * 2)
        test = test.select(np.flatnonzero(test.n_photons > 0))
        sess = self.onnx_fn(ort_session(onnx_path))
        native = self.torch_fn()
        rows, worst_abs, worst_rel, failing, flips, groups = 0, 0.0, 0.0, 0, 0, []
        start = 0
        for k, size in enumerate(sizes):
            idx = np.arange(start, start + size) % max(len(test), 1)
            start += size
            ev = test.select(idx)
            noise = self.noise_for(ev, self.spec.seed + 3 + k)
            a = self.run(native, ev, noise).astype(np.float64)
            b = self.run(sess, ev, noise).astype(np.float64)
            cont = slice(1, 5)
            diff = np.abs(a[:, cont] - b[:, cont])
            bad = ~(diff <= tol["atol"] + tol["rtol"] * np.abs(a[:, cont]))
            u = 0.5 * (1 + _erf(noise[:, -1] / np.sqrt(2)))
            flip = (a[:, 0] != b[:, 0]) & (np.abs(u - a[:, 4]) > 1e-5)
            rows += len(a)
            failing += int(bad.any(1).sum())
            flips += int(flip.sum())
            worst_abs = max(worst_abs, float(diff.max(initial=0.0)))
            worst_rel = max(worst_rel, float((diff / np.maximum(np.abs(a[:, cont]), 1e-12)).max(initial=0.0)))
            groups.append({"events": int(size), "photons": len(a)})
        res = {"rows": rows, "groups": groups, "max_abs_deviation": worst_abs, "max_rel_deviation": worst_rel,
               "atol": tol["atol"], "rtol": tol["rtol"], "n_failing": failing, "on_flag_mismatches": flips}
        if failing or flips:
            raise GateError(f"{self.spec.name}: parity torch vs onnxruntime failed: {failing} slots beyond "
                            f"tolerance (max |dev| {worst_abs:.3g}), {flips} on-flag mismatches")
        return res

    # ------------------------------------------------------------ validation
    def validate(self, df: D.Events, predict, report_dir: Path) -> tuple[dict, list[Path]]:  # type: ignore[override]
        """ECAL metrics on test events with the exported ONNX model (``predict`` is the row API: unused)."""
        noise = self.noise_for(df, self.spec.seed + 7)
        y = self.predict_events(df, noise, self.spec.onnx_path)
        return ecal_validation.validate(df, y, report_dir, self.spec.name, self.spec.seed)


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


def card_json(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}
