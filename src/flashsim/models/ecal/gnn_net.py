"""The ECAL graph network (torch-geometric): photons and candidate-cluster slots as a heterogeneous graph.

Node types: ``photon`` (one per generated photon) and ``slot`` (one candidate cluster per photon). Edge types:
``photon -near-> photon`` and ``slot -near-> slot`` for photons of the same event closer than
:data:`flashsim.io.ecal.EDGE_RADIUS` cells, and ``photon -feeds-> slot`` (the near edges plus each
photon feeding its own slot). Edge attributes are computed in the model from the photons: (dx, dy, distance) in
cell units and the log energy ratio. Message passing uses sum aggregation only (ScatterElements add in ONNX
opset 17), so the exported graph takes any number of photons and edges: no padding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import HeteroConv, MessagePassing

from flashsim.models.ecal.core import N_FEATURES, PhotonFeatures, SlotHeads, SlotOutput, pair_features
from flashsim.models.nets import MLP

PP = ("photon", "near", "photon")
PS = ("photon", "feeds", "slot")
SS = ("slot", "near", "slot")


class EdgeMLPConv(MessagePassing):
    """``out_i = sum_j mlp([h_i, h_j, e_ij])`` over edges j -> i (bipartite when given a (src, dst) pair)."""

    def __init__(self, width: int, edge_dim: int = 4) -> None:
        super().__init__(aggr="add")
        self.mlp = MLP(2 * width + edge_dim, width, width=width, depth=2, skip=False)

    def forward(self, x, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return self.propagate(edge_index, x=x, edge_attr=edge_attr)

    def message(self, x_i: torch.Tensor, x_j: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x_i, x_j, edge_attr], -1))


class EcalGNN(nn.Module):
    """``encode(x [N, 5], edge_index [2, E]) -> (logit [N], slot embedding [N, W])``; ``sample(s, z)`` gives the
    normalised cluster target ``mean(s) + spread(s, z)`` (see :class:`flashsim.models.ecal.core.SlotHeads`)."""

    def __init__(self, width: int = 48, layers: int = 3, noise_dim: int = 4,
                 features: PhotonFeatures | None = None, output: SlotOutput | None = None) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.features = features or PhotonFeatures()
        self.output = output or SlotOutput()
        self.enc_photon = MLP(N_FEATURES, width, width=width, depth=2, skip=False)
        self.enc_slot = MLP(N_FEATURES, width, width=width, depth=2, skip=False)
        self.convs = nn.ModuleList(
            HeteroConv({PP: EdgeMLPConv(width), PS: EdgeMLPConv(width), SS: EdgeMLPConv(width)}, aggr="sum")
            for _ in range(layers))
        self.norm_p = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.norm_s = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.heads = SlotHeads(width + N_FEATURES, noise_dim)

    def encode(self, x: torch.Tensor, edge_index: torch.Tensor):
        f = self.features(x)
        h, s = self.enc_photon(f), self.enc_slot(f)
        n = x.shape[0]
        loops = torch.arange(n, device=x.device).unsqueeze(0).repeat(2, 1)
        feed = torch.cat([edge_index, loops], 1)
        e_near = pair_features(x[edge_index[1]], x[edge_index[0]], self.features.geometry)
        e_feed = pair_features(x[feed[1]], x[feed[0]], self.features.geometry)
        edges = {PP: edge_index, PS: feed, SS: edge_index}
        attrs = {PP: e_near, PS: e_feed, SS: e_near}
        for conv, norm_p, norm_s in zip(self.convs, self.norm_p, self.norm_s, strict=True):
            out = conv({"photon": h, "slot": s}, edges, edge_attr_dict=attrs)
            h = norm_p(h + out["photon"])
            s = norm_s(s + out["slot"])
        s = torch.cat([s, f], -1)  # the heads also see the photon's own features directly
        return self.heads.logit(s), s

    def flat_slots(self, batch: dict[str, torch.Tensor]):
        return self.encode(batch["x"], batch["edge_index"])

    def forward(self, x: torch.Tensor, noise: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Physical outputs y [N, 5] = (on, cluster_x, cluster_y, cluster_E, p_on)."""
        logit, s = self.encode(x, edge_index)
        return self.output(x, logit, self.heads.sample(s, noise[:, : self.noise_dim]), noise[:, -1])
