"""Per-group target quantile transforms of the generator family (``target_groups``), inside the exported graph.

A target quantile transform fitted on a pooled sample gives its tails to the sub-populations that own them: the
dp/p of upstream and downstream tracks and the electrons' bremsstrahlung tail sit beyond |z| ~ 1.4 of the pooled
Gaussian space, while the long hadrons' whole core lies inside it, so a slight over-dispersion of the long hadrons
in that space becomes an electron-size momentum error (docs/physics-check.md). Here the listed targets are first
Gaussianised per group of 0/1 condition flags, by a quantile transform fitted on that group's training rows only
(groups with fewer than :data:`MIN_GROUP_ROWS` rows share the pooled one); every group then owns the whole
Gaussian space, and its generated tails map onto its own. The group of a row is read from its flags in the graph
(``sum_i [x_i > 0.5] 2^i``, a table lookup), every group's inverse is evaluated and the row's is picked by a
one-hot sum, so the exported ``(x, noise) -> y`` interface is unchanged (and `flashsim cabi` compiles it); the
cost is one piecewise-linear map per group and target.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from flashsim.models import generative as G
from flashsim.preprocessing import QuantileTransform

MIN_GROUP_ROWS = 200  # groups with fewer training rows use the pooled transform


class GroupQuantile(nn.Module):
    """Targets ``targets`` of ``y`` -> Gaussian space by the quantile transform of the row's group (of the flag
    columns ``flags`` of ``x``; ``index[code]`` picks the transform), and the inverse as a torch module."""

    def __init__(self, flags: list[int], targets: list[int], n_out: int, transforms: list[QuantileTransform],
                 index: np.ndarray) -> None:
        super().__init__()
        self.flags, self.targets, self.n_out = list(flags), list(targets), int(n_out)
        self.transforms = transforms
        self.index_np = np.asarray(index, dtype=np.int64)
        self.inverses = nn.ModuleList([t.inverse() for t in transforms])
        self.register_buffer("index", torch.as_tensor(self.index_np))
        self.register_buffer("pow2", torch.as_tensor([2 ** i for i in range(len(flags))], dtype=torch.int64))
        self.register_buffer("flag_idx", torch.as_tensor(self.flags, dtype=torch.int64))
        self.register_buffer("target_idx", torch.as_tensor(self.targets, dtype=torch.int64))
        self.register_buffer("group_ids", torch.arange(len(transforms), dtype=torch.int64))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, flags: list[int], targets: list[int], weights: np.ndarray | None,
            n_knots: int, tail_knots: int = 0) -> GroupQuantile:
        """One quantile transform per populated group (and a pooled one); a flag column with values other than
        0 and 1 is a ValueError."""
        for j in flags:
            if not np.isin(x[:, j], (0.0, 1.0)).all():
                raise ValueError(f"feature column {j} holds values other than 0 and 1")
        code = cls.codes(x, flags)
        yt = y[:, targets]

        def fit(rows: np.ndarray) -> QuantileTransform:
            return QuantileTransform.fit(yt[rows], None if weights is None else weights[rows], n_knots,
                                         tail_knots=tail_knots)

        transforms = [fit(np.ones(len(y), dtype=bool))]
        index = np.zeros(2 ** len(flags), dtype=np.int64)
        for k in range(len(index)):
            rows = code == k
            if rows.sum() >= MIN_GROUP_ROWS:
                index[k] = len(transforms)
                transforms.append(fit(rows))
        return cls(flags, targets, y.shape[1], transforms, index)

    @staticmethod
    def codes(x: np.ndarray, flags: list[int]) -> np.ndarray:
        code = np.zeros(len(x), dtype=np.int64)
        for i, j in enumerate(flags):
            code |= (np.asarray(x[:, j]) > 0.5).astype(np.int64) << i
        return code

    def state(self) -> dict:
        return {"flags": self.flags, "targets": self.targets, "n_out": self.n_out,
                "transforms": [t.state() for t in self.transforms], "index": self.index_np.tolist()}

    @classmethod
    def from_state(cls, s: dict) -> GroupQuantile:
        return cls(s["flags"], s["targets"], s["n_out"], [QuantileTransform.from_state(t) for t in s["transforms"]],
                   np.asarray(s["index"]))

    def transform(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Numpy forward map of the training targets (the other columns pass unchanged)."""
        out = np.array(y, dtype=np.float64)
        which = self.index_np[self.codes(x, self.flags)]
        for i, t in enumerate(self.transforms):
            rows = which == i
            if rows.any():
                out[np.ix_(rows, self.targets)] = t.transform(y[np.ix_(rows, self.targets)])
        return out

    def inverse(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        which = self.index[((x[:, self.flag_idx] > 0.5).to(torch.int64) * self.pow2).sum(-1)]  # [N]
        zt = z[:, self.target_idx]
        outs = torch.stack([inv(zt) for inv in self.inverses])  # [G, N, T]
        # a one-hot sum, not a gather: every shape stays static once the batch is pinned (C code generation)
        sel = (which.unsqueeze(0) == self.group_ids.unsqueeze(1)).to(outs.dtype)  # [G, N]
        picked = (outs * sel.unsqueeze(-1)).sum(0)
        cols = [picked[:, self.targets.index(c)] if c in self.targets else z[:, c] for c in range(self.n_out)]
        return torch.stack(cols, dim=1)


class GroupedGenerator(G.PhysicalGenerator):
    """:class:`~flashsim.models.generative.PhysicalGenerator` with the per-group transforms undone after the
    inverse target transform (before post-processing)."""

    def __init__(self, x_transform: nn.Module, core: nn.Module, y_inverse: nn.Module, groups: GroupQuantile,
                 post: nn.Module | None = None) -> None:
        super().__init__(x_transform, core, y_inverse, post)
        self.groups = groups

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.post(self.groups.inverse(self.y_inverse(self.core(self.x_transform(x), noise)), x))
