"""Family ``ghost_mlp``: the ghost-track probability MLP, 17 -> 25 -> 20 -> 1 (LHCb's trigger benchmark network).

Inputs: the 17 track-quality features of the ghost sample (``flashsim.io.contract.GHOST_FEATURES``), physical
units. Preprocessing inside the graph is cheap on purpose (this network is benchmarked at 1e6+ tracks per call):
``log`` of the heavy-tailed features (``log_features``), then a standardisation that is folded into the first
layer's weights after training, so the exported graph is ``Log/Where -> Gemm -> act -> Gemm -> act -> Gemm ->
Sigmoid``. Output ``y`` [N, 2] = (P(real), P(ghost)) (the classifier convention; the network has one output).
Validation: the shared classifier metrics (log-loss, AUC, calibration chi2 in (p, eta) bins, log-loss gap to the
oracle ``true_ghostProb``) plus the ROC AUC of the reference truth and the ROC curves of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flashsim.io.contract import GHOST_FEATURES
from flashsim.models import base
from flashsim.models.nets import ACTIVATIONS
from flashsim.models.torch_base import TORCH_SCHEMA, TorchFamily
from flashsim.training import DeviceData, epoch_loop, normalised_weights, optimizer_step, state_functions, weighted_mean

LOG_FEATURES = ["chi2PerDoF", "veloChi2PerDoF", "TChi2PerDoF", "matchChi2", "p", "pt"]
LOG_FLOOR = 1e-3
DEFAULTS = {"epochs": 12, "batch_size": 1024, "lr": 3e-3, "weight_decay": 1e-5, "activation": "silu"}


class GhostNet(nn.Module):
    """``x`` (physical) -> log of selected columns -> standardise -> 25 -> 20 -> 1 -> sigmoid -> [1 - p, p]."""

    def __init__(self, n_in: int, hidden: tuple[int, ...] = (25, 20), activation: str = "silu",
                 log_mask: np.ndarray | None = None, mean: np.ndarray | None = None,
                 std: np.ndarray | None = None) -> None:
        super().__init__()
        self.register_buffer("log_mask", torch.as_tensor(
            np.zeros(n_in, bool) if log_mask is None else np.asarray(log_mask, bool)))
        self.register_buffer("mean", torch.as_tensor(np.zeros(n_in) if mean is None else mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.ones(n_in) if std is None else std, dtype=torch.float32))
        sizes = [n_in, *hidden, 1]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Physical features -> the (standardised) network inputs."""
        x = torch.where(self.log_mask, torch.log(torch.clamp(x, min=LOG_FLOOR)), x)
        return (x - self.mean) / self.std

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.preprocess(x)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.layers(self.preprocess(x)))
        return torch.cat([1.0 - p, p], -1)

    @torch.no_grad()
    def fold(self) -> GhostNet:
        """Fold the standardisation into the first layer (mean 0, std 1 afterwards): same outputs, fewer ops."""
        first = self.layers[0]
        w = first.weight / self.std
        first.bias.copy_(first.bias - (w * self.mean).sum(1))
        first.weight.copy_(w)
        self.mean.zero_()
        self.std.fill_(1.0)
        return self


class FoldedGhostNet(nn.Module):
    """The exported graph of a folded :class:`GhostNet` (no standardisation ops left)."""

    def __init__(self, net: GhostNet) -> None:
        super().__init__()
        self.log_mask, self.layers = net.log_mask, net.layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.layers(torch.where(self.log_mask, torch.log(torch.clamp(x, min=LOG_FLOOR)), x)))
        return torch.cat([1.0 - p, p], -1)


class Family(base.ClassifierMixin, TorchFamily):
    task = "classifier"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    SCHEMA: ClassVar[dict[str, Any]] = {
        "checkpoint_every": TORCH_SCHEMA["checkpoint_every"], **base.ClassifierMixin.CLASSIFIER_SCHEMA,
        **{k: {**TORCH_SCHEMA[k], "default": v} for k, v in DEFAULTS.items()},
        "features": {**base.COMMON_SCHEMA["features"], "default": list(GHOST_FEATURES)},
        "label": {"type": "string", "default": "isGhost"},
        "class_names": {"type": "array", "items": {"type": "string"}, "default": ["real", "ghost"]},
        "hidden": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
                   "default": [25, 20], "description": "hidden layer widths"},
        "log_features": {"type": "array", "items": {"type": "string"}, "default": LOG_FEATURES,
                         "description": "features entering as log(max(x, 1e-3))"},
    }
    module: GhostNet

    def build_net(self, log_mask=None, mean=None, std=None) -> GhostNet:
        c = self.cfg
        return GhostNet(len(self.feature_names), tuple(c["hidden"]), c["activation"], log_mask, mean, std)

    def _log_mask(self) -> np.ndarray:
        unknown = set(self.cfg["log_features"]) - set(self.feature_names)
        if unknown:
            from flashsim.errors import ConfigError

            raise ConfigError(f"models/{self.spec.name}/log_features: not among the features: {sorted(unknown)}")
        return np.array([f in self.cfg["log_features"] for f in self.feature_names])

    def fit(self, ctx) -> dict:
        device = self.setup()
        c = self.cfg
        tr, va = self.frame("train", c["max_rows"]), self.frame("val", c["max_rows"])
        x, y, w = self.features(tr), self.labels(tr).astype(np.float32), self.weights(tr)
        mask = self._log_mask()
        xl = np.where(mask, np.log(np.maximum(x, LOG_FLOOR)), x)
        self.module = self.build_net(mask, xl.mean(0), np.maximum(xl.std(0), 1e-6)).to(device)
        prep = self.module.preprocess
        with torch.no_grad():
            xt = prep(torch.as_tensor(np.array(x), device=device)).cpu().numpy()
            xv = prep(torch.as_tensor(np.array(self.features(va)), device=device)).cpu().numpy()
        data = DeviceData(device, x=xt, y=y, w=normalised_weights(w, len(x)))
        val = DeviceData(device, x=xv, y=self.labels(va).astype(np.float32),
                         w=normalised_weights(self.weights(va), len(xv)))
        net = self.module.layers
        opt = torch.optim.AdamW(net.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
        bs = min(c["batch_size"], data.n)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c["lr"], total_steps=c["epochs"] * (data.n // bs),
                                                    pct_start=0.2)
        gen = torch.Generator().manual_seed(self.spec.seed)

        def bce(xb, yb, wb):
            return weighted_mean(F.binary_cross_entropy_with_logits(net(xb).squeeze(-1), yb, reduction="none"), wb)

        def epoch_fn(epoch: int) -> dict[str, float]:
            net.train()
            losses = []
            for b in data.batches(bs, gen):
                loss = bce(b["x"], b["y"], b["w"])
                losses.append(optimizer_step(loss, opt, sched))
            net.eval()
            with torch.no_grad():
                lv = bce(val["x"], val["y"], val["w"])
            return {"loss": float(torch.stack(losses).mean()), "val_loss": float(lv), "lr": sched.get_last_lr()[0]}

        get_state, set_state = state_functions(net=net, opt=opt, sched=sched, gen=gen)

        history = epoch_loop(c["epochs"], epoch_fn, get_state=get_state, set_state=set_state,
                             checkpointer=self.checkpointer(), ctx=ctx, desc=self.spec.name)
        self.module = self.module.cpu().eval().fold()
        self.save({"state": self.module.state_dict()})
        return {"rows": len(tr), "val_rows": len(va), "history": history, "device": str(device),
                "val_loss": history[-1]["val_loss"]}

    def load(self) -> None:
        self.module = self.build_net()
        self.module.load_state_dict(self.load_payload()["state"])
        self.module.eval()

    def to_onnx(self, path: Path) -> None:
        from flashsim.export import export_torch

        export_torch(FoldedGhostNet(self.module), path, len(self.feature_names))

    def validate(self, df, predict, report_dir: Path) -> tuple[dict, list[Path]]:
        from flashsim import validation as V

        m, plots = super().validate(df, predict, report_dir)
        y = self.labels(df)
        oracle = self.oracle(df)
        truth = None if oracle is None else oracle[:, 1]
        if truth is not None:
            m["oracle.auc"] = V.weighted_auc(truth, y == 1)
            m["auc_gap"] = m["oracle.auc"] - m["auc"]
        probs = np.asarray(predict(self.features(df), None), dtype=np.float64)[:, 1]
        plots.append(plot_roc(probs, truth, y == 1, report_dir / "roc.png"))
        return m, plots


def roc_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) over decreasing thresholds; positives = ghosts."""
    order = np.argsort(-score, kind="stable")
    lab = np.asarray(label, bool)[order]
    tp, fp = np.cumsum(lab), np.cumsum(~lab)
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def plot_roc(model: np.ndarray, truth: np.ndarray | None, label: np.ndarray, path: Path) -> Path:
    from flashsim.validation.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots()
    for name, s in (("ghost MLP", model), ("reference truth (true_ghostProb)", truth)):
        if s is None:
            continue
        fpr, tpr = roc_curve(s, label)
        ax.plot(1 - fpr, tpr, label=name)
    ax.set_xlabel("real-track efficiency (1 - false-positive rate)")
    ax.set_ylabel("ghost rejection (true-positive rate)")
    ax.legend()
    return save_figure(fig, Path(path))
