"""Conditional generators with an explicit noise input: WGAN-GP and conditional flow matching.

Both work in the quantile-transformed spaces (conditions ``c`` and targets ``y`` gaussianised) and expose
``core(c, z) -> y`` with ``z`` standard normal of size ``core.noise_dim``. :class:`PhysicalGenerator` wraps a core
with the input transform and the inverse output transform (and an optional post-processing module) so that the
exported ONNX graph maps physical ``x`` and ``noise`` to physical ``y``.

Per-row weights (e.g. sWeights, negative allowed) enter every loss as ``mean(w_i * loss_i)`` with ``w``
normalised to mean 1 over the training set (see :func:`flashsim.training.normalised_weights`).

- ``gan``: WGAN with gradient penalty; the critic sees (c, y). Critic loss ``mean(w (D(c, G(c, z)) - D(c, y)))
  + lambda GP``, generator loss ``-mean(w D(c, G(c, z)))``; ``n_critic`` critic steps per generator step.
- ``flow``: conditional flow matching (rectified-flow path ``y_t = (1 - t) z + t y``, target velocity ``y - z``);
  sampling integrates the ODE from t=0 to 1 with ``ode_steps`` fixed midpoint steps, unrolled in the graph.
- few-step flow (``steps`` > 0): the trained flow (the *teacher*, ``2 x ode_steps`` network calls) is distilled into a
  *student* of ``steps`` Euler steps (``steps`` network calls), warm-started from the teacher's velocity net (one
  Euler step ``y = z + v(z, 0, c)`` is the straight-path estimate) and trained to regress the teacher's output on
  fixed ``(c, z)`` pairs (one noise draw per training row; weighted MSE in the transformed space), the state with
  the lowest held-out loss kept (:func:`distill`). Same ``(c, z) -> y`` interface, same export.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from flashsim.models.nets import MLP
from flashsim.training import (
    Checkpointer,
    DeviceData,
    MetricsLog,
    autocast,
    epoch_loop,
    optimizer_step,
    weighted_mean,
)

log = logging.getLogger(__name__)
METHODS = ("gan", "flow")

DEFAULTS: dict[str, Any] = {
    "method": "flow",
    "width": 128,
    "depth": 4,
    "activation": "silu",
    "noise_dim": 0,  # gan: latent size (0 -> number of targets); flow: always the number of targets
    "epochs": 20,
    "batch_size": 2048,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "lr_schedule": "cosine",
    "n_critic": 3,  # gan
    "gp_lambda": 5.0,  # gan
    "critic_width": 128,
    "critic_depth": 4,
    "ode_steps": 8,  # flow
    "steps": 0,  # flow: network calls of the exported sampler; 0: the ode_steps midpoint teacher, else distilled
    "distill_epochs": 20,
    "distill_lr": 1.0e-3,
    "ema": 0.0,  # exponential moving average of generator weights (0: off)
    "amp": True,  # bf16 autocast on CUDA
    "compile": False,  # torch.compile the training step functions (CUDA)
}


class GanGenerator(nn.Module):
    def __init__(self, n_cond: int, n_out: int, noise_dim: int, cfg: dict) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.net = MLP(n_cond + noise_dim, n_out, cfg["width"], cfg["depth"], cfg["activation"], skip=True)

    def forward(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([c, z], dim=-1))


class FlowGenerator(nn.Module):
    """Velocity field ``v(y_t, t, c)`` and a fixed-step ODE sampler in ``forward(c, z)``: ``ode_steps`` midpoint
    steps (``2 x ode_steps`` network calls), or with ``solver="euler"`` ``ode_steps`` Euler steps (one call each,
    the distilled few-step student)."""

    def __init__(self, n_cond: int, n_out: int, cfg: dict, solver: str = "midpoint") -> None:
        super().__init__()
        self.noise_dim = n_out
        self.steps = int(cfg["ode_steps"])
        self.solver = solver
        self.net = MLP(n_out + n_cond + 3, n_out, cfg["width"], cfg["depth"], cfg["activation"], skip=True)

    @staticmethod
    def _tfeat(ref: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = ref[:, :1] * 0 + t
        return torch.cat([t, torch.sin(math.pi * t), torch.cos(math.pi * t)], dim=-1)

    def velocity(self, y: torch.Tensor, t: torch.Tensor | float, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([y, self._tfeat(y, t), c], dim=-1))

    @property
    def calls(self) -> int:
        """Network calls per row."""
        return self.steps * (1 if self.solver == "euler" else 2)

    def forward(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y, h = z, 1.0 / self.steps
        for k in range(self.steps):
            t = k * h
            if self.solver == "euler":
                y = y + h * self.velocity(y, t, c)
                continue
            y_mid = y + 0.5 * h * self.velocity(y, t, c)
            y = y + h * self.velocity(y_mid, t + 0.5 * h, c)
        return y


def build_core(method: str, n_cond: int, n_out: int, cfg: dict) -> nn.Module:
    if method == "gan":
        return GanGenerator(n_cond, n_out, int(cfg["noise_dim"]) or n_out, cfg)
    if method == "flow":
        return FlowGenerator(n_cond, n_out, cfg)
    raise ValueError(f"unknown generative method {method!r}; choose from {METHODS}")


def build_student(teacher: FlowGenerator, steps: int) -> FlowGenerator:
    """A ``steps``-call Euler sampler with the teacher's architecture and (warm-start) weights."""
    student = copy.deepcopy(teacher)
    student.steps, student.solver = int(steps), "euler"
    return student


def distill(teacher: FlowGenerator, train: DeviceData, val: DeviceData, cfg: dict, device: torch.device,
            seed: int, ctx: MetricsLog | None = None, desc: str = "distill") -> tuple[FlowGenerator, list[dict]]:
    """Student of ``cfg["steps"]`` Euler calls regressing the teacher's ``y(c, z)``; the best held-out state.

    Loss ``mean(w |student(c, z) - teacher(c, z)|^2)`` (transformed space, w as in training); ``distill_epochs``
    epochs of Adam with a cosine schedule, the state with the lowest held-out loss (fixed held-out noise) kept."""
    cfg = {**DEFAULTS, **cfg}
    teacher = teacher.to(device).eval().requires_grad_(False)
    torch.manual_seed(seed)
    student = build_student(teacher, int(cfg["steps"])).to(device).requires_grad_(True).train()
    gen = torch.Generator().manual_seed(seed + 2)
    g = torch.Generator().manual_seed(4321)
    n_val = min(val.n, 20000)
    idx = torch.randperm(val.n, generator=g)[:n_val].to(device)
    cv, wv = val["c"][idx], val["w"][idx]
    zv = torch.randn(n_val, teacher.noise_dim, generator=g).to(device)
    with torch.no_grad():
        yv = teacher(cv, zv)

    def val_loss() -> float:
        student.eval()
        with torch.no_grad():
            out = float(weighted_mean(((student(cv, zv) - yv) ** 2).mean(-1), wv))
        student.train()
        return out

    # the teacher's outputs once, one noise draw per training row (the teacher is 2 x ode_steps calls: drawing
    # fresh pairs every epoch would cost several times the training itself)
    zt = torch.randn(train.n, teacher.noise_dim, generator=gen).to(device)
    with torch.no_grad():
        yt = torch.cat([teacher(train["c"][i:i + 65536], zt[i:i + 65536]) for i in range(0, train.n, 65536)])
    pairs = DeviceData(device, c=train["c"], z=zt, y=yt, w=train["w"])
    bs = min(int(cfg["batch_size"]), train.n)
    epochs = int(cfg["distill_epochs"])
    opt = torch.optim.Adam(student.parameters(), lr=float(cfg["distill_lr"]))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(train.n // bs, 1) * epochs,
                                                       eta_min=float(cfg["distill_lr"]) * 0.05)
    best, best_state = val_loss(), copy.deepcopy(student.state_dict())
    history = [{"epoch": 0, "distill.val_loss": best}]
    for epoch in range(1, epochs + 1):
        losses = []
        for b in pairs.batches(bs, gen):
            loss = weighted_mean(((student(b["c"], b["z"]) - b["y"]) ** 2).mean(-1), b["w"])
            losses.append(optimizer_step(loss, opt))
            sched.step()
        v = val_loss()
        row = {"epoch": epoch, "distill.loss": float(torch.stack(losses).mean()), "distill.val_loss": v}
        history.append(row)
        if ctx is not None:
            ctx.log_metrics({k: x for k, x in row.items() if k != "epoch"}, step=epoch)
        if v < best:
            best, best_state = v, copy.deepcopy(student.state_dict())
    student.load_state_dict(best_state)
    log.info("%s: %d-call student, held-out distillation loss %.3g -> %.3g in %d epochs", desc, student.calls,
             history[0]["distill.val_loss"], best, epochs)
    return student.eval().requires_grad_(False), history


class PhysicalGenerator(nn.Module):
    """``(x, noise) -> y`` in physical units: transform x, run the core, invert the target transform, post."""

    def __init__(self, x_transform: nn.Module, core: nn.Module, y_inverse: nn.Module,
                 post: nn.Module | None = None) -> None:
        super().__init__()
        self.x_transform, self.core, self.y_inverse = x_transform, core, y_inverse
        self.post = post if post is not None else nn.Identity()

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.post(self.y_inverse(self.core(self.x_transform(x), noise)))


def _gradient_penalty(critic: nn.Module, c: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                      w: torch.Tensor) -> torch.Tensor:
    a = torch.rand(len(real), 1, device=real.device)
    y = (a * real + (1 - a) * fake).requires_grad_(True)
    out = critic(torch.cat([c, y], dim=-1))
    (g,) = torch.autograd.grad(out.sum(), y, create_graph=True)
    return weighted_mean((g.norm(dim=-1) - 1.0) ** 2, w.abs())


class Trainer:
    """Trains a core on device-resident ``(c, y, w)``; resumable through :func:`flashsim.training.epoch_loop`."""

    def __init__(self, method: str, n_cond: int, n_out: int, cfg: dict, device: torch.device, seed: int) -> None:
        self.cfg = {**DEFAULTS, **cfg}
        self.method, self.device = method, device
        torch.manual_seed(seed)
        self.core = build_core(method, n_cond, n_out, self.cfg).to(device)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.opt = torch.optim.Adam(self.core.parameters(), lr=self.cfg["lr"],
                                    betas=(0.5, 0.9) if method == "gan" else (0.9, 0.999),
                                    weight_decay=self.cfg["weight_decay"])
        self.critic = None
        if method == "gan":
            self.critic = MLP(n_cond + n_out, 1, self.cfg["critic_width"], self.cfg["critic_depth"],
                              "leaky_relu", skip=True).to(device)
            self.copt = torch.optim.Adam(self.critic.parameters(), lr=self.cfg["lr"], betas=(0.5, 0.9))
        self.ema = None
        if self.cfg["ema"]:
            self.ema = build_core(method, n_cond, n_out, self.cfg).to(device)
            self.ema.load_state_dict(self.core.state_dict())
            self.ema.requires_grad_(False)
        self.sched = None
        self.flow_step = self._flow_step_impl
        if self.cfg["compile"] and device.type == "cuda":
            self.flow_step = torch.compile(self._flow_step_impl)

    # ------------------------------------------------------------ state
    def state(self) -> dict:
        s = {"core": self.core.state_dict(), "opt": self.opt.state_dict()}
        if self.critic is not None:
            s |= {"critic": self.critic.state_dict(), "copt": self.copt.state_dict()}
        if self.ema is not None:
            s["ema"] = self.ema.state_dict()
        if self.sched is not None:
            s["sched"] = self.sched.state_dict()
        s["gen"] = self.gen.get_state()
        return s

    def load_state(self, s: dict) -> None:
        self.core.load_state_dict(s["core"])
        self.opt.load_state_dict(s["opt"])
        if self.critic is not None:
            self.critic.load_state_dict(s["critic"])
            self.copt.load_state_dict(s["copt"])
        if self.ema is not None:
            self.ema.load_state_dict(s["ema"])
        if self.sched is not None and "sched" in s:
            self.sched.load_state_dict(s["sched"])
        self.gen.set_state(s["gen"])

    def final_core(self) -> nn.Module:
        return (self.ema if self.ema is not None else self.core).eval()

    # ------------------------------------------------------------ steps
    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.core.noise_dim, device=self.device)

    def _flow_step_impl(self, c, y, w):
        z = torch.randn_like(y)
        t = torch.rand(len(y), 1, device=y.device)
        yt = (1 - t) * z + t * y
        with autocast(self.device, self.cfg["amp"]):
            v = self.core.velocity(yt, t, c)
        loss = weighted_mean(((v.float() - (y - z)) ** 2).mean(-1), w)
        return optimizer_step(loss, self.opt)

    def gan_step(self, c, y, w, train_gen: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            fake = self.core(c, self._noise(len(c)))
        d_real = self.critic(torch.cat([c, y], -1)).squeeze(-1)
        d_fake = self.critic(torch.cat([c, fake], -1)).squeeze(-1)
        wdist = weighted_mean(d_real - d_fake, w)
        closs = -wdist + self.cfg["gp_lambda"] * _gradient_penalty(self.critic, c, y, fake, w)
        self.copt.zero_grad(set_to_none=True)
        closs.backward()
        self.copt.step()
        gloss = None
        if train_gen:
            self.critic.requires_grad_(False)
            fake = self.core(c, self._noise(len(c)))
            gloss = -weighted_mean(self.critic(torch.cat([c, fake], -1)).squeeze(-1), w)
            self.opt.zero_grad(set_to_none=True)
            gloss.backward()
            self.opt.step()
            self.critic.requires_grad_(True)
        return wdist.detach(), None if gloss is None else gloss.detach()

    def _ema_update(self) -> None:
        if self.ema is None:
            return
        d = float(self.cfg["ema"])
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.core.parameters(), strict=True):
                pe.lerp_(p, 1 - d)

    @torch.no_grad()
    def val_loss(self, data: DeviceData, n: int = 20000) -> float:
        """Flow: the matching loss; GAN: the critic's Wasserstein estimate on held-out rows (lower is better)."""
        g = torch.Generator().manual_seed(1234)
        idx = torch.randperm(data.n, generator=g)[:n].to(self.device)
        c, y, w = data["c"][idx], data["y"][idx], data["w"][idx]
        core = self.final_core()
        if self.method == "flow":
            z = torch.randn(y.shape, generator=g).to(self.device)
            t = torch.rand(len(y), 1, generator=g).to(self.device)
            v = core.velocity((1 - t) * z + t * y, t, c)
            out = float(weighted_mean(((v - (y - z)) ** 2).mean(-1), w))
        else:
            z = torch.randn(len(c), core.noise_dim, generator=g).to(self.device)
            fake = core(c, z)
            out = float(weighted_mean(self.critic(torch.cat([c, y], -1)).squeeze(-1)
                                      - self.critic(torch.cat([c, fake], -1)).squeeze(-1), w))
        self.core.train()
        return out

    # ------------------------------------------------------------ loop
    def fit(self, train: DeviceData, val: DeviceData | None, ctx: MetricsLog | None = None,
            checkpointer: Checkpointer | None = None, desc: str = "train",
            stop_after: int | None = None) -> list[dict]:
        cfg = self.cfg
        bs = min(int(cfg["batch_size"]), train.n)
        steps_per_epoch = max(train.n // bs, 1)
        total = steps_per_epoch * int(cfg["epochs"])
        if cfg["lr_schedule"] == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total, eta_min=cfg["lr"] * 0.05)
        self.core.train()

        def epoch_fn(epoch: int) -> dict[str, float]:
            losses, glosses = [], []
            for i, b in enumerate(train.batches(bs, self.gen)):
                if self.method == "flow":
                    losses.append(self.flow_step(b["c"], b["y"], b["w"]))
                else:
                    wd, gl = self.gan_step(b["c"], b["y"], b["w"], train_gen=(i % int(cfg["n_critic"]) == 0))
                    losses.append(wd)
                    if gl is not None:
                        glosses.append(gl)
                if self.sched is not None:
                    self.sched.step()
                self._ema_update()
            m = {"loss" if self.method == "flow" else "wasserstein": float(torch.stack(losses).mean())}
            if glosses:
                m["gen_loss"] = float(torch.stack(glosses).mean())
            m["lr"] = self.opt.param_groups[0]["lr"]
            if val is not None:
                m["val_loss"] = self.val_loss(val)
            return m

        return epoch_loop(int(cfg["epochs"]), epoch_fn, get_state=self.state, set_state=self.load_state,
                          checkpointer=checkpointer, ctx=ctx, desc=desc, stop_after=stop_after)


def sample(core: nn.Module, c: np.ndarray, noise: np.ndarray, device: torch.device | None = None,
           batch_size: int = 65536) -> np.ndarray:
    """Run a core on numpy arrays in batches (transformed space in, transformed space out)."""
    device = device or next(core.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(c), batch_size):
            out.append(core(torch.as_tensor(c[i:i + batch_size], dtype=torch.float32, device=device),
                            torch.as_tensor(noise[i:i + batch_size], dtype=torch.float32, device=device)).cpu())
    return torch.cat(out).numpy() if out else np.empty((0, 0), dtype=np.float32)
