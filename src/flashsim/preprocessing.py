"""Weighted quantile transforms as torch modules that export to ONNX (piecewise-linear with fixed knots).

``QuantileTransform.fit(x, w)`` estimates, per column, the weighted CDF (negative sWeights allowed: the cumulative
weight is normalised, made monotone with a running maximum and clipped to [0, 1]) and keeps ``n_knots`` knots
``(x_k, t_k)`` where ``t_k`` is the target-space value of quantile ``u_k`` (``gaussian``: the standard-normal
quantile; ``uniform``: ``u_k`` itself). The forward map ``x -> t`` and the inverse ``t -> x`` are the same
piecewise-linear curve read in either direction, so ``inverse(forward(x)) == x`` inside the fitted range and
values outside are clamped to it. Columns with repeated values (integers, flags) get one knot per distinct value
at the mid-quantile of its CDF jump, so discrete values round-trip exactly.

Only ``Max``, ``Min``, ``Sub``, ``Mul`` and ``ReduceSum`` are needed in the graph (no searchsorted, no erfinv).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import ndtri
from torch import nn

TARGETS = ("gaussian", "uniform")


def weighted_cdf(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and the monotone weighted CDF at each (mid-point of each jump).

    Negative weights are allowed: the cumulative sum is normalised by the total, made non-decreasing with a
    running maximum and clipped to [0, 1]. Returns ``(xs, u)`` with ``xs`` strictly increasing.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(v) & np.isfinite(w)
    v, w = v[ok], w[ok]
    if v.size == 0:
        raise ValueError("no finite values to fit a quantile transform")
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    xs, start = np.unique(v, return_index=True)
    wsum = np.add.reduceat(w, start)
    total = wsum.sum()
    if not total > 0:
        raise ValueError("the sum of weights must be positive")
    hi = np.clip(np.maximum.accumulate(np.cumsum(wsum) / total), 0.0, 1.0)
    lo = np.concatenate([[0.0], hi[:-1]])
    return xs, 0.5 * (lo + hi)


def _column_knots(values: np.ndarray, weights: np.ndarray | None, n_knots: int, target: str,
                  tail: float) -> tuple[np.ndarray, np.ndarray]:
    xs, u = weighted_cdf(values, weights)
    if xs.size == 1:
        return xs, np.zeros(1)
    if xs.size <= n_knots:  # few distinct values: one knot each
        kx, ku = xs, u
    else:
        grid = np.linspace(0.0, 1.0, n_knots)
        # the end knots are the extreme values so that the full range round-trips
        kx = np.interp(grid, u, xs)
        kx[0], kx[-1] = xs[0], xs[-1]
        kx = np.unique(kx.astype(np.float32)).astype(np.float64)
        ku = np.interp(kx, xs, u)
    # keep the targets strictly increasing even where the CDF is flat (negative weights)
    ku = np.clip(ku, tail, 1.0 - tail)
    kt = ndtri(ku) if target == "gaussian" else ku
    return _strict_float32(kx), _strict_float32(kt)


def _strict_float32(k: np.ndarray) -> np.ndarray:
    """Round knots to float32 and nudge them to be strictly increasing there (the graph runs in float32)."""
    k = np.asarray(k, dtype=np.float32).copy()
    for i in range(1, k.size):
        if not k[i] > k[i - 1]:
            k[i] = np.nextafter(k[i - 1], np.float32(np.inf))
    return k.astype(np.float64)


class _PiecewiseLinear(nn.Module):
    """Monotone piecewise-linear map per column, ``y = y0 + sum_k s_k (clamp(x, a_k, b_k) - a_k)``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, y0: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)  # [F, K-1] segment starts
        self.register_buffer("b", b)  # [F, K-1] segment ends
        self.register_buffer("s", s)  # [F, K-1] slopes
        self.register_buffer("y0", y0)  # [F]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xe = x.unsqueeze(-1)
        seg = torch.minimum(torch.maximum(xe, self.a), self.b) - self.a
        return self.y0 + (seg * self.s).sum(-1)


def _segments(src: list[np.ndarray], dst: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    n_seg = max(max(len(k) for k in src) - 1, 1)
    f = len(src)
    a = np.zeros((f, n_seg))
    b = np.zeros((f, n_seg))
    s = np.zeros((f, n_seg))
    y0 = np.zeros(f)
    for i, (kx, ky) in enumerate(zip(src, dst, strict=True)):
        y0[i] = ky[0]
        m = len(kx) - 1
        if m == 0:
            a[i], b[i] = kx[0], kx[0]
            continue
        a[i, :m], b[i, :m] = kx[:-1], kx[1:]
        s[i, :m] = np.diff(ky) / np.diff(kx)
        a[i, m:], b[i, m:] = kx[-1], kx[-1]  # zero-width padding segments contribute nothing
    return tuple(torch.as_tensor(t, dtype=torch.float64) for t in (a, b, s, y0))


class QuantileTransform(nn.Module):
    """Per-column weighted quantile transform (physical units -> ``target`` space); see the module doc."""

    def __init__(self, knots_x: list[np.ndarray], knots_t: list[np.ndarray], target: str = "gaussian") -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose from {TARGETS}")
        self.target = target
        self.knots_x = [np.asarray(k, dtype=np.float64) for k in knots_x]
        self.knots_t = [np.asarray(k, dtype=np.float64) for k in knots_t]
        self.fwd = _PiecewiseLinear(*(t.float() for t in _segments(self.knots_x, self.knots_t)))

    @property
    def n_features(self) -> int:
        return len(self.knots_x)

    @classmethod
    def fit(cls, x: np.ndarray, weights: np.ndarray | None = None, n_knots: int = 256,
            target: str = "gaussian", tail: float = 1e-4) -> QuantileTransform:
        """Fit on ``x`` [N, F] with optional per-row ``weights`` (may be negative)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        knots = [_column_knots(x[:, j], weights, n_knots, target, tail) for j in range(x.shape[1])]
        return cls([k[0] for k in knots], [k[1] for k in knots], target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fwd(x)

    def inverse(self) -> _PiecewiseLinear:
        """The inverse map (``target`` space -> physical units) as its own exportable module."""
        return _PiecewiseLinear(*(t.float() for t in _segments(self.knots_t, self.knots_x)))

    # -- numpy convenience (float64, for training-time use) --
    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return np.stack([np.interp(x[:, j], kx, kt) for j, (kx, kt) in
                         enumerate(zip(self.knots_x, self.knots_t, strict=True))], axis=1)

    def inverse_transform(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64).reshape(len(t), -1)
        return np.stack([np.interp(t[:, j], kt, kx) for j, (kx, kt) in
                         enumerate(zip(self.knots_x, self.knots_t, strict=True))], axis=1)

    def state(self) -> dict:
        """A picklable description (for checkpoints); rebuild with :meth:`from_state`."""
        return {"target": self.target, "knots_x": [k.tolist() for k in self.knots_x],
                "knots_t": [k.tolist() for k in self.knots_t]}

    @classmethod
    def from_state(cls, state: dict) -> QuantileTransform:
        return cls([np.asarray(k) for k in state["knots_x"]], [np.asarray(k) for k in state["knots_t"]],
                   state["target"])
