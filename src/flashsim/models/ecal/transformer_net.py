"""The ECAL encoder-decoder Transformer: photons padded to [B, L] with a mask, one decoder query per photon slot.

The encoder runs self-attention over the photons of each event; the decoder's queries (one candidate cluster per
photon) run self-attention among themselves (so slots can agree which one of merged photons survives) and
cross-attention to the encoded photons. Every attention adds a learned per-head bias from the pair geometry
(dx, dy, distance in cells, log energy ratio), the Transformer analogue of the GNN's edge attributes. Padded keys
are masked with a large negative score (not -inf), so fully padded rows stay finite. Attention is written with
plain matmul/softmax so that ONNX export has dynamic B and L.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flashsim.models.ecal.core import N_FEATURES, PhotonFeatures, SlotHeads, SlotOutput, pair_features
from flashsim.models.nets import MLP

NEG = -1e9


class Attention(nn.Module):
    """Multi-head attention with an additive pair bias and relation-aware values: besides the values, each head
    also returns the attention-weighted pair features (relative position, energy ratio) of the keys."""

    def __init__(self, width: int, heads: int, n_rel: int = 4) -> None:
        super().__init__()
        if width % heads:
            raise ValueError("width must be a multiple of heads")
        self.heads, self.dk = heads, width // heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.r = nn.Linear(heads * n_rel, width)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.dk).transpose(1, 2)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, bias: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """``bias`` [B, H, Lq, Lk]: geometric bias plus NEG on padded keys; ``rel`` [B, Lq, Lk, R] pair features."""
        q, k, v = self._split(self.q(xq)), self._split(self.k(xkv)), self._split(self.v(xkv))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dk) + bias, dim=-1)
        out = (att @ v).transpose(1, 2)
        b, n = out.shape[0], out.shape[1]
        r = (att.unsqueeze(-1) * rel.unsqueeze(1)).sum(-2).transpose(1, 2)  # [B, Lq, H, R]
        return self.o(out.reshape(b, n, -1)) + self.r(r.reshape(b, n, -1))


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, feed-forward."""

    def __init__(self, width: int, heads: int, cross: bool) -> None:
        super().__init__()
        self.n1, self.att = nn.LayerNorm(width), Attention(width, heads)
        self.cross = Attention(width, heads) if cross else None
        self.n2 = nn.LayerNorm(width) if cross else None
        self.n3 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, rel: torch.Tensor, memory: torch.Tensor | None = None,
                cross_bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.att(h, h, bias, rel)
        if self.cross is not None:
            x = x + self.cross(self.n2(x), memory, cross_bias, rel)
        return x + self.ff(self.n3(x))


class EcalTransformer(nn.Module):
    """``encode(x [B, L, 5], mask [B, L] bool) -> (logit [B, L], slot embedding [B, L, W], safe x)``; the heads are
    those of the GNN (:class:`flashsim.models.ecal.core.SlotHeads`)."""

    def __init__(self, width: int = 48, heads: int = 4, enc_layers: int = 2, dec_layers: int = 2,
                 noise_dim: int = 4, features: PhotonFeatures | None = None, output: SlotOutput | None = None) -> None:
        super().__init__()
        self.noise_dim, self.n_heads = noise_dim, heads
        self.features = features or PhotonFeatures()
        self.output = output or SlotOutput()
        self.embed_photon = MLP(N_FEATURES, width, width=width, depth=2, skip=False)
        self.embed_slot = MLP(N_FEATURES, width, width=width, depth=2, skip=False)
        n_bias = enc_layers + 2 * dec_layers
        self.geo = nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Linear(32, heads * n_bias))
        # a learnable locality prior per layer and head: bias -= slope * distance (cells), starting local
        self.locality = nn.Parameter(torch.full((n_bias, 1, heads, 1, 1), 0.5))
        self.encoder = nn.ModuleList(Block(width, heads, cross=False) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(Block(width, heads, cross=True) for _ in range(dec_layers))
        self.norm = nn.LayerNorm(width)
        self.heads = SlotHeads(width + N_FEATURES, noise_dim)
        self.register_buffer("pad_photon", torch.tensor([1000.0, 1000.0, 0.1, 0.1, 1000.0]))

    def _biases(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per attention (encoder, then decoder self and cross) the bias [B, H, L, L]; and the clamped pair
        features [B, L, L, 4] for the relation-aware values."""
        b, n, _ = x.shape
        pi = x.unsqueeze(2).expand(b, n, n, 5)
        pj = x.unsqueeze(1).expand(b, n, n, 5)
        # padded photons are stand-ins, masked below
        pf = torch.clamp(pair_features(pi, pj, self.features.geometry), -20.0, 20.0)
        geo = self.geo(pf)  # [B, L, L, H * n_bias]
        geo = geo.reshape(b, n, n, -1, self.n_heads).permute(3, 0, 4, 1, 2)  # [n_bias, B, H, L, L]
        geo = geo - torch.nn.functional.softplus(self.locality) * pf[..., 2].unsqueeze(1).unsqueeze(0)
        key_pad = (~mask).to(x.dtype).reshape(b, 1, 1, n) * NEG
        rel = pf * mask.to(x.dtype).reshape(b, 1, n, 1)
        return [geo[i] + key_pad for i in range(geo.shape[0])], rel

    def encode(self, x: torch.Tensor, mask: torch.Tensor):
        # padded rows may hold anything: replace them by a harmless photon before any log
        safe = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x) + self.pad_photon)
        f = self.features(safe)
        biases, rel = self._biases(safe, mask)
        h = self.embed_photon(f)
        k = 0
        for blk in self.encoder:
            h = blk(h, biases[k], rel)
            k += 1
        s = self.embed_slot(f)
        for blk in self.decoder:
            s = blk(s, biases[k], rel, memory=h, cross_bias=biases[k + 1])
            k += 2
        s = torch.cat([self.norm(s), f], -1)  # the heads also see the photon's own features directly
        return self.heads.logit(s), s, safe

    def flat_slots(self, batch: dict[str, torch.Tensor]):
        mask = batch["mask"]
        logit, s, _ = self.encode(batch["x"], mask)
        return logit[mask], s[mask]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Physical outputs y [B, L, 5] = (on, cluster_x, cluster_y, cluster_E, p_on); padded slots are 0."""
        logit, s, safe = self.encode(x, mask)
        y = self.output(safe, logit, self.heads.sample(s, noise[..., : self.noise_dim]), noise[..., -1])
        return y * mask.unsqueeze(-1).to(y.dtype)
