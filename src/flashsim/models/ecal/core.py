"""Pieces shared by the two ECAL set-to-set models (GNN and Transformer): in-graph geometry and features,
the physical output layer, the discriminator, the adversarial training step and the batching of events.

A model implements ``flat_slots(batch) -> (logit, s)``: per candidate slot (one per photon, flattened in event
order) the logit of the slot being on and a slot embedding ``s``, and has ``heads`` (:class:`SlotHeads`) that turn
``s`` (and noise) into the cluster-relative target (see :mod:`flashsim.io.ecal`), gaussianised by a
quantile transform fitted on the matched training slots (inverted inside the exported graph).
Loss (as for Lamarr's calorimeter models) = BCE(on) + ``mse_weight`` x per-target-weighted MSE of the
conditional-mean head on the geometrically matched slots + ``adv_weight`` x non-saturating adversarial loss of a
discriminator that sees (photon conditions, neighbourhood context, target) of matched slots + ``energy_weight`` x
the energy score of two samples per matched slot (a proper scoring rule for the joint distribution; on
by default because with the few hundred steps of a demo training the adversarial term alone leaves the cluster
residuals far too narrow: measured two-sample AUC 0.99 without it, about 0.6 with it, same budget).

Physical outputs ``y[..., 5]`` = (on, cluster_x [mm], cluster_y [mm], cluster_E [MeV], p_on): ``on`` is 1 when
``Phi(noise[..., -1]) < p_on``, so all randomness comes from the ``noise`` input.

The ECAL geometry (face z, regions and cell sizes: :class:`flashsim.detector.EcalGeometry`) is baked into the
graph as constants by the modules that need it (:class:`PhotonFeatures`, :class:`SlotOutput`); the nets take it
from their ``features`` module.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from flashsim.detector import LHCB_ECAL, EcalGeometry
from flashsim.io import ecal as D
from flashsim.models.nets import MLP
from flashsim.preprocessing import QuantileTransform

N_FEATURES = 7  # normalised x, y, tx, ty, log E, log ET, log cell
N_RAW = 6
CELL_SCALE = 60.6  # mm: the log cell-size feature is log(cell / CELL_SCALE)


def cell_size_t(x: torch.Tensor, y: torch.Tensor, geometry: EcalGeometry = LHCB_ECAL) -> torch.Tensor:
    """Torch (exportable) twin of :meth:`flashsim.detector.EcalGeometry.cell_size`."""
    ax, ay = x.abs(), y.abs()
    size = torch.zeros_like(x) + geometry.regions[-1].cell
    for r in reversed(geometry.regions[:-1]):
        size = torch.where((ax < r.half_x) & (ay < r.half_y), torch.zeros_like(x) + r.cell, size)
    return size


class PhotonFeatures(nn.Module):
    """Physical photons [..., 5] (x, y, tx, ty, E) -> normalised features [..., 7]: x, y, tx, ty, log E and
    log ET (the ECAL threshold is in transverse energy; ET from the impact point as seen from the origin) with a
    fitted affine scaling, and the log of the local cell size (of ``geometry``)."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 geometry: EcalGeometry = LHCB_ECAL) -> None:
        super().__init__()
        self.geometry = geometry
        self.register_buffer("mean", torch.as_tensor(np.zeros(N_RAW) if mean is None else mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.ones(N_RAW) if std is None else std, dtype=torch.float32))

    @staticmethod
    def raw(photons: np.ndarray, geometry: EcalGeometry = LHCB_ECAL) -> np.ndarray:
        r = np.hypot(photons[:, 0], photons[:, 1])
        log_et = np.log(photons[:, 4] * r / np.hypot(r, geometry.z))
        return np.column_stack([photons[:, :4], np.log(photons[:, 4]), log_et])

    @classmethod
    def fit(cls, photons: np.ndarray, geometry: EcalGeometry = LHCB_ECAL) -> PhotonFeatures:
        r = cls.raw(photons, geometry)
        return cls(r.mean(0), np.maximum(r.std(0), 1e-6), geometry)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        z = self.geometry.z
        log_e = torch.log(p[..., 4:5])
        r2 = p[..., 0:1] * p[..., 0:1] + p[..., 1:2] * p[..., 1:2]
        log_et = log_e + 0.5 * (torch.log(r2 + 1e-6) - torch.log(r2 + z * z))
        r = torch.cat([p[..., :4], log_e, log_et], -1)
        cell = cell_size_t(p[..., 0], p[..., 1], self.geometry).unsqueeze(-1)
        return torch.cat([(r - self.mean) / self.std, torch.log(cell / CELL_SCALE)], -1)


def radius_edges_t(photons: torch.Tensor, counts: torch.Tensor, radius: float = D.EDGE_RADIUS,
                   geometry: EcalGeometry = LHCB_ECAL) -> torch.Tensor:
    """Torch twin of :func:`flashsim.io.ecal.radius_edges` (same edges, same order) that runs where the
    photons are, e.g. on the GPU next to the exported GNN: photons [N, 5], counts [B] (photons per event)."""
    dev = photons.device
    counts = counts.to(dev, torch.int64)
    starts = torch.cumsum(counts, 0) - counts
    ends = torch.repeat_interleave(starts + counts, counts)
    idx = torch.arange(len(ends), device=dev)
    npair = ends - idx - 1
    a = torch.repeat_interleave(idx, npair)
    first = torch.repeat_interleave(torch.cumsum(npair, 0) - npair, npair)
    b = a + 1 + (torch.arange(len(a), device=dev) - first)
    x, y = photons[:, 0].double(), photons[:, 1].double()
    cell = cell_size_t(x, y, geometry)
    near = torch.hypot(x[a] - x[b], y[a] - y[b]) < radius * torch.maximum(cell[a], cell[b])
    a, b = a[near], b[near]
    src, dst = torch.cat([a, b]), torch.cat([b, a])
    order = torch.argsort(dst * max(len(photons), 1) + src)
    return torch.stack([src[order], dst[order]])


def pair_features(pi: torch.Tensor, pj: torch.Tensor, geometry: EcalGeometry = LHCB_ECAL) -> torch.Tensor:
    """Geometric features of photon j seen from photon i ([..., 5] physical each) -> [..., 4]:
    (dx, dy, distance) in cells (larger of the two cells) and log(E_j / E_i)."""
    cell = torch.maximum(cell_size_t(pi[..., 0], pi[..., 1], geometry), cell_size_t(pj[..., 0], pj[..., 1], geometry))
    dx = (pj[..., 0] - pi[..., 0]) / cell
    dy = (pj[..., 1] - pi[..., 1]) / cell
    d = torch.sqrt(dx * dx + dy * dy + 1e-12)
    return torch.stack([dx, dy, d, torch.log(pj[..., 4] / pi[..., 4])], -1)


class SlotHeads(nn.Module):
    """Per-slot heads on the slot embedding ``s``: the on logit, the conditional mean of the (transformed)
    target, and a noise-driven spread: ``sample(s, z) = mean(s) + scale(s) * z[:3] + shape(s, z)``. The
    per-target scale on the first three noise components gives every target a direct noise path (so none can
    collapse to its mean during a short training); the MLP ``shape`` makes the distribution non-Gaussian."""

    def __init__(self, width: int, noise_dim: int) -> None:
        super().__init__()
        if noise_dim < 3:
            raise ValueError("noise_dim must be at least 3 (one direct noise component per target)")
        self.head_p = MLP(width, 1, width=width, depth=2, skip=False)
        self.head_mu = MLP(width, 3, width=width, depth=2, skip=False)
        self.head_scale = MLP(width, 3, width=width, depth=2, skip=False)
        self.head_r = MLP(width + noise_dim, 3, width=width, depth=3, skip=False)

    def logit(self, s: torch.Tensor) -> torch.Tensor:
        return self.head_p(s).squeeze(-1)

    def mean(self, s: torch.Tensor) -> torch.Tensor:
        return self.head_mu(s)

    def sample(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.softplus(self.head_scale(s) + 0.5)
        return self.head_mu(s) + scale * z[..., :3] + self.head_r(torch.cat([s, z], -1))


def fit_target_transform(t: np.ndarray, n_knots: int = 64) -> QuantileTransform:
    """Gaussianising quantile transform of the matched targets (dx, dy in cells, log E ratio)."""
    return QuantileTransform.fit(t, n_knots=n_knots, target="gaussian")


class SlotOutput(nn.Module):
    """(photons, logit, transformed target, existence noise) -> physical y [..., 5] (see the module doc)."""

    def __init__(self, target: QuantileTransform | None = None, geometry: EcalGeometry = LHCB_ECAL) -> None:
        super().__init__()
        self.geometry = geometry
        target = target or QuantileTransform([np.array([-1.0, 1.0])] * 3, [np.array([-1.0, 1.0])] * 3)
        self.inverse = target.inverse()

    def forward(self, p: torch.Tensor, logit: torch.Tensor, t_norm: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(logit)
        on = (0.5 * (1.0 + torch.erf(u / math.sqrt(2.0))) < prob).to(p.dtype)
        t = self.inverse(t_norm)
        cell = cell_size_t(p[..., 0], p[..., 1], self.geometry)
        cx = p[..., 0] + t[..., 0] * cell
        cy = p[..., 1] + t[..., 1] * cell
        e = p[..., 4] * torch.exp(t[..., 2])
        return torch.stack([on, cx, cy, e, prob], -1)


class Discriminator(nn.Module):
    """Critic of matched slots: (photon features [6], context [3], normalised target [3]) -> logit."""

    def __init__(self, width: int = 64, depth: int = 3) -> None:
        super().__init__()
        self.net = MLP(N_FEATURES + len(D.CONTEXT) + 3, 1, width=width, depth=depth, activation="leaky_relu")

    def forward(self, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([cond, t], -1)).squeeze(-1)


# ---------------------------------------------------------------- prepared arrays
@dataclass
class SlotData:
    """Per-photon training arrays of a set of events (event-contiguous)."""

    events: D.Events
    on: np.ndarray  # [N] 1 when a reference cluster is matched to the photon
    t: np.ndarray  # [N, 3] cluster relative to the photon (physical, unnormalised)
    context: np.ndarray  # [N, 3]
    edges: np.ndarray  # [2, E] radius edges (global photon indices)

    @classmethod
    def build(cls, ev: D.Events) -> SlotData:
        slot_cluster, _ = D.match(ev)
        on, t = D.targets(ev, slot_cluster)
        edges = D.radius_edges(ev)
        return cls(ev, on, t, D.context(ev.photons, edges, geometry=ev.geometry), edges)

    def target_transform(self, n_knots: int = 64) -> QuantileTransform:
        return fit_target_transform(self.t[self.on > 0], n_knots)


def context_scaled(ctx: np.ndarray) -> np.ndarray:
    """Fixed scaling of the context to O(1) for the discriminator."""
    return np.column_stack([ctx[:, 0] / D.EDGE_RADIUS, ctx[:, 1] / 3.0, np.log1p(ctx[:, 2])]).astype(np.float32)


def event_batches(counts: np.ndarray, max_photons: int, order: np.ndarray | None = None) -> list[np.ndarray]:
    """Split events (in ``order``) into consecutive groups of at most ``max_photons`` photons (>= 1 event);
    events without photons are skipped (they give no clusters)."""
    order = np.arange(len(counts)) if order is None else order
    order = order[counts[order] > 0]
    out, start, total = [], 0, 0
    for k, n in enumerate(counts[order]):
        if total + n > max_photons and k > start:
            out.append(order[start:k])
            start, total = k, 0
        total += n
    if start < len(order):
        out.append(order[start:])
    return out


# ---------------------------------------------------------------- adversarial training step
@dataclass
class LossConfig:
    mse_weight: float = 1.0
    mse_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    adv_weight: float = 1.0
    energy_weight: float = 1.0  # energy-score term (proper scoring rule, two samples per slot)


def generator_loss(model: nn.Module, logit: torch.Tensor, s: torch.Tensor, on: torch.Tensor, t: torch.Tensor,
                   cond: torch.Tensor, disc: Discriminator | None, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """BCE on every slot; on matched slots the weighted MSE of the conditional-mean head, the adversarial term
    on a sample (and optionally the energy score); targets in the transformed space."""
    heads: SlotHeads = model.heads
    bce = nn.functional.binary_cross_entropy_with_logits(logit, on)
    m = on > 0.5
    out = {"bce": bce}
    total = bce
    if not bool(m.any()):
        out["loss"] = total + 0.0 * s.sum()
        return out
    sm, tm, cm = s[m], t[m], cond[m]
    w = torch.as_tensor(cfg.mse_weights, dtype=t.dtype, device=t.device)
    mse = (((heads.mean(sm) - tm) ** 2) * w).sum(-1).mean()
    out["mse"] = mse
    total = total + cfg.mse_weight * mse
    z = torch.randn(len(sm), model.noise_dim, device=s.device)
    t_hat = heads.sample(sm, z)
    if disc is not None and cfg.adv_weight > 0:
        adv = nn.functional.softplus(-disc(cm, t_hat)).mean()
        out["adv"] = adv
        total = total + cfg.adv_weight * adv
    if cfg.energy_weight > 0:
        t_hat2 = heads.sample(sm, torch.randn_like(z))
        es = ((t_hat - tm).norm(dim=-1) + (t_hat2 - tm).norm(dim=-1)).mean() / 2 - 0.5 * (
            t_hat - t_hat2).norm(dim=-1).mean()
        out["energy"] = es
        total = total + cfg.energy_weight * es
    out["loss"] = total
    return out


def discriminator_loss(disc: Discriminator, cond: torch.Tensor, t_real: torch.Tensor,
                       t_fake: torch.Tensor) -> torch.Tensor:
    return (nn.functional.softplus(-disc(cond, t_real)).mean() + nn.functional.softplus(disc(cond, t_fake)).mean())


def train_step(model: nn.Module, disc: Discriminator, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
               batch: dict[str, torch.Tensor], cfg: LossConfig) -> dict[str, float]:
    """One discriminator step then one generator step on a batch (``model.flat_slots(batch)``)."""
    m = batch["on"] > 0.5
    logs: dict[str, float] = {}
    if cfg.adv_weight > 0 and bool(m.any()):
        with torch.no_grad():
            _, s = model.flat_slots(batch)
            sm = s[m]
            t_fake = model.heads.sample(sm, torch.randn(len(sm), model.noise_dim, device=sm.device))
        d_loss = discriminator_loss(disc, batch["cond"][m], batch["t"][m], t_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        logs["d_loss"] = float(d_loss.detach())
    logit, s = model.flat_slots(batch)
    losses = generator_loss(model, logit, s, batch["on"], batch["t"], batch["cond"], disc, cfg)
    opt_g.zero_grad(set_to_none=True)
    losses["loss"].backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt_g.step()
    logs.update({k: float(v.detach()) for k, v in losses.items()})
    return logs


def mean_logs(logs: Iterator[dict[str, float]], prefix: str = "") -> dict[str, float]:
    acc: dict[str, list[float]] = {}
    for row in logs:
        for k, v in row.items():
            acc.setdefault(k, []).append(v)
    return {f"{prefix}{k}": float(np.mean(v)) for k, v in acc.items()}


# ---------------------------------------------------------------- batches
def _cond(features: PhotonFeatures, photons: np.ndarray, ctx: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        f = features(torch.as_tensor(photons, dtype=torch.float32))
    return torch.cat([f, torch.as_tensor(context_scaled(ctx))], -1)


def graph_batch(data: SlotData, events: np.ndarray, features: PhotonFeatures, target: QuantileTransform,
                ) -> dict[str, torch.Tensor]:
    """Flat (GNN) batch of the given events: x, edge_index (local), on, t (normalised), cond."""
    sub = data.events.select(events)
    rows = D.ranges(data.events.photon_start[events], data.events.n_photons[events])
    return {
        "x": torch.as_tensor(sub.photons, dtype=torch.float32),
        "edge_index": torch.as_tensor(D.radius_edges(sub)),
        "on": torch.as_tensor(data.on[rows]),
        "t": torch.as_tensor(target.transform(data.t[rows]), dtype=torch.float32),
        "cond": _cond(features, sub.photons, data.context[rows]),
    }


def pad_events(ev: D.Events) -> tuple[np.ndarray, np.ndarray]:
    """Photons of ``ev`` padded to [B, L, 5] (L = the largest event, at least 1) and the mask [B, L]."""
    b, length = len(ev), max(int(ev.n_photons.max(initial=0)), 1)
    x = np.zeros((b, length, 5), dtype=np.float32)
    mask = np.arange(length)[None, :] < ev.n_photons[:, None]
    x[mask] = ev.photons
    return x, mask


def padded_batch(data: SlotData, events: np.ndarray, features: PhotonFeatures, target: QuantileTransform,
                 ) -> dict[str, torch.Tensor]:
    """Padded (Transformer) batch: x [B, L, 5], mask [B, L]; on, t, cond flat in mask order."""
    sub = data.events.select(events)
    rows = D.ranges(data.events.photon_start[events], data.events.n_photons[events])
    x, mask = pad_events(sub)
    return {
        "x": torch.as_tensor(x), "mask": torch.as_tensor(mask),
        "on": torch.as_tensor(data.on[rows]),
        "t": torch.as_tensor(target.transform(data.t[rows]), dtype=torch.float32),
        "cond": _cond(features, sub.photons, data.context[rows]),
    }


def size_sorted_batches(counts: np.ndarray, max_slots: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Groups of events of similar size (sorted by photon count, ties shuffled) with B * L <= max_slots."""
    order = np.lexsort((rng.random(len(counts)), counts))
    order = order[counts[order] > 0]
    out, start = [], 0
    for k in range(1, len(order) + 1):
        if k == len(order) or (k - start + 1) * counts[order[k]] > max_slots:
            out.append(order[start:k])
            start = k
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------- training loop
@dataclass
class TrainConfig:
    epochs: int = 15
    lr: float = 2e-3
    lr_disc: float = 1e-3
    disc_width: int = 64
    loss: LossConfig = field(default_factory=LossConfig)


def fit(model: nn.Module, train_batches: list[dict[str, torch.Tensor]], val_batches: list[dict[str, torch.Tensor]],
        cfg: TrainConfig, *, device: torch.device, seed: int, checkpointer=None, ctx=None,
        desc: str = "ecal", stop_after: int | None = None) -> list[dict]:
    """Adversarial training over fixed batches (order reshuffled every epoch); resumable via ``checkpointer``."""
    from flashsim.training import epoch_loop, state_functions

    model.to(device)
    disc = Discriminator(cfg.disc_width).to(device)
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_disc, betas=(0.5, 0.999))
    train_batches = [to_device(b, device) for b in train_batches]
    val_batches = [to_device(b, device) for b in val_batches]

    def epoch_fn(epoch: int) -> dict[str, float]:
        scale = 0.5 * (1 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
        for opt, lr in ((opt_g, cfg.lr), (opt_d, cfg.lr_disc)):
            for g in opt.param_groups:
                g["lr"] = lr * (0.05 + 0.95 * scale)
        model.train()
        order = np.random.default_rng([seed, epoch]).permutation(len(train_batches))
        logs = mean_logs(train_step(model, disc, opt_g, opt_d, train_batches[i], cfg.loss) for i in order)
        model.eval()
        with torch.no_grad():
            val = mean_logs(
                {k: float(v) for k, v in generator_loss(model, *model.flat_slots(b), b["on"], b["t"], b["cond"],
                                                        disc, cfg.loss).items()} for b in val_batches)
        return {**{f"train_{k}": v for k, v in logs.items()}, **{f"val_{k}": v for k, v in val.items()}}

    get_state, set_state = state_functions(model=model, disc=disc, opt_g=opt_g, opt_d=opt_d)

    history = epoch_loop(cfg.epochs, epoch_fn, get_state=get_state, set_state=set_state, checkpointer=checkpointer,
                         ctx=ctx, desc=desc, stop_after=stop_after)
    model.eval().cpu()
    return history
