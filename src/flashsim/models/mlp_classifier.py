"""Torch MLP classifier family (skip connections, C classes, weighted cross entropy, quantile-transformed inputs).

ONNX: ``x`` (physical) -> quantile transform -> MLP -> softmax -> ``y`` probabilities [N, C].
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flashsim.models import base
from flashsim.models.nets import MLP
from flashsim.models.torch_base import TORCH_SCHEMA, TorchFamily
from flashsim.preprocessing import QuantileTransform
from flashsim.training import (
    DeviceData,
    autocast,
    epoch_loop,
    normalised_weights,
    optimizer_step,
    state_functions,
    weighted_mean,
)

DEFAULTS = {"epochs": 10, "batch_size": 1024, "lr": 2e-3, "weight_decay": 1e-5, "width": 128, "depth": 4,
            "activation": "silu", "amp": True, "compile": False}


class ClassifierNet(nn.Module):
    def __init__(self, qx: QuantileTransform, net: MLP) -> None:
        super().__init__()
        self.qx, self.net = qx, net

    def logits(self, xt: torch.Tensor) -> torch.Tensor:
        return self.net(xt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(self.qx(x)), dim=-1)


class Family(base.ClassifierMixin, TorchFamily):
    task = "classifier"
    REQUIRED = ("features", "label")
    SCHEMA: ClassVar[dict[str, Any]] = {**TORCH_SCHEMA, **base.ClassifierMixin.CLASSIFIER_SCHEMA,
              **{k: {**TORCH_SCHEMA[k], "default": v} for k, v in DEFAULTS.items()},
              "skip": {"type": "boolean", "default": True}}

    def _build(self, qx: QuantileTransform) -> ClassifierNet:
        c = self.cfg
        net = MLP(len(self.feature_names), len(c["classes"]), c["width"], c["depth"], c["activation"], c["skip"])
        return ClassifierNet(qx, net)

    def fit(self, ctx) -> dict:
        device = self.setup()
        tr = self.frame("train", self.cfg["max_rows"])
        va = self.frame("val", self.cfg["max_rows"])
        x, y = self.features(tr), self.labels(tr)
        w = self.training_weights(tr, [x, y[:, None]])
        qx = QuantileTransform.fit(x, w, self.cfg["n_knots"])
        self.module = self._build(qx).to(device)
        data = DeviceData(device, x=qx.transform(x).astype(np.float32), y=y.astype(np.int64),
                          w=normalised_weights(w, len(x)))
        xv, yv = self.features(va), self.labels(va)
        val = DeviceData(device, x=qx.transform(xv).astype(np.float32), y=yv.astype(np.int64),
                         w=normalised_weights(self.training_weights(va, [xv, yv[:, None]]), len(xv)))
        c = self.cfg
        opt = torch.optim.AdamW(self.module.net.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
        bs = min(c["batch_size"], data.n)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c["lr"], total_steps=c["epochs"] * (data.n // bs),
                                                    pct_start=0.2)
        gen = torch.Generator().manual_seed(self.spec.seed)
        net = self.module.net

        def epoch_fn(epoch: int) -> dict[str, float]:
            net.train()
            losses = []
            for b in data.batches(bs, gen):
                with autocast(device, c["amp"]):
                    logits = net(b["x"])
                loss = weighted_mean(F.cross_entropy(logits.float(), b["y"], reduction="none"), b["w"])
                losses.append(optimizer_step(loss, opt, sched))
            net.eval()
            with torch.no_grad():
                lv = weighted_mean(F.cross_entropy(net(val["x"]), val["y"], reduction="none"), val["w"])
                acc = (net(val["x"]).argmax(-1) == val["y"]).float().mean()
            return {"loss": float(torch.stack(losses).mean()), "val_loss": float(lv), "val_accuracy": float(acc),
                    "lr": sched.get_last_lr()[0]}

        get_state, set_state = state_functions(net=net, opt=opt, sched=sched, gen=gen)

        history = epoch_loop(c["epochs"], epoch_fn, get_state=get_state, set_state=set_state,
                             checkpointer=self.checkpointer(), ctx=ctx, desc=self.spec.name)
        self.module = self.module.cpu().eval()
        self.save({"qx": qx.state(), "net": net.state_dict()})
        return {"rows": len(tr), "val_rows": len(va), "history": history, "device": str(device),
                "val_loss": history[-1]["val_loss"]}

    def load(self) -> None:
        s = self.load_payload()
        self.module = self._build(QuantileTransform.from_state(s["qx"]))
        self.module.net.load_state_dict(s["net"])
        self.module.eval()
