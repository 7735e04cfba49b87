"""Weighted quantile transforms as torch modules that export to ONNX (piecewise-linear with fixed knots).

``QuantileTransform.fit(x, w)`` estimates, per column, the weighted CDF (negative sWeights allowed: the cumulative
weight is normalised, made monotone with a running maximum and clipped to [0, 1]) and keeps ``n_knots`` knots
``(x_k, t_k)`` where ``t_k`` is the target-space value of quantile ``u_k`` (``gaussian``: the standard-normal
quantile; ``uniform``: ``u_k`` itself). The forward map ``x -> t`` and the inverse ``t -> x`` are the same
piecewise-linear curve read in either direction, so ``inverse(forward(x)) == x`` inside the fitted range and
values outside are clamped to it. Columns with repeated values (integers, flags) get one knot per distinct value
at the mid-quantile of its CDF jump, so discrete values round-trip exactly.

Point masses inside a continuous column (``atoms``: e.g. a DLL that is exactly 0 when no hypothesis radiates) can be
kept exact: with ``fit(..., atoms=f)`` every value holding at least a fraction ``f`` of the weight is an atom
``(x0, t_lo, t_hi)``, ``[t_lo, t_hi]`` being the target-space image of its CDF jump (the forward map sends
``[x0 - d, x0 + d]``, d a millionth of the column's range, onto it). The inverse map is then flat
(``= x0``) on ``[t_lo, t_hi]``, and ``transform(x, rng=...)`` (training targets) spreads the atom uniformly in
quantile over that interval, so a generator trained on the spread targets reproduces the point mass exactly.
The deterministic forward map (the graph's) still sends ``x0`` to the middle of the interval.

The graph needs only comparisons, ``ReduceSum``, ``Gather`` and arithmetic (no searchsorted, no erfinv).
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


def tail_grid(n_knots: int, tail_knots: int, u_min: float) -> np.ndarray:
    """Quantiles of the knots: ``n_knots`` equally spaced in [0, 1], plus ``tail_knots`` per side log-spaced
    between the first interior knot and ``u_min`` (the extreme sample quantile), so that the end segments, read
    linearly, hold ~``u_min`` of the weight instead of ``1 / (n_knots - 1)``."""
    grid = np.linspace(0.0, 1.0, n_knots)
    if tail_knots <= 0 or n_knots < 3 or not 0 < u_min < grid[1]:
        return grid
    lo = np.exp(np.linspace(np.log(grid[1]), np.log(u_min), tail_knots + 1)[1:])
    return np.unique(np.concatenate([grid, lo, 1.0 - lo]))


def _column_knots(values: np.ndarray, weights: np.ndarray | None, n_knots: int, target: str,
                  tail: float, atoms: float = 0.0,
                  tail_knots: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward knots ``(x, t)`` and the atoms ``[[x0, t_lo, t_hi], ...]`` (empty unless ``atoms`` > 0)."""
    xs, u = weighted_cdf(values, weights)
    no_atoms = np.empty((0, 3))
    if xs.size == 1:
        return xs, np.zeros(1), no_atoms
    if tail_knots > 0:  # the end knots take the sample's own extreme quantiles
        tail = min(tail, float(u[0]), 1.0 - float(u[-1]))
    if xs.size <= n_knots:  # few distinct values: one knot each
        kx, ku = xs, u
    else:
        grid = tail_grid(n_knots, tail_knots, min(float(u[0]), 1.0 - float(u[-1])))
        # the end knots are the extreme values so that the full range round-trips
        kx = np.interp(grid, u, xs)
        kx[0], kx[-1] = xs[0], xs[-1]
        kx = np.unique(kx.astype(np.float32)).astype(np.float64)
        ku = np.interp(kx, xs, u)
    atom_rows = no_atoms
    if atoms > 0 and xs.size > 1:
        lo_u, hi_u = _cdf_jumps(xs, u)
        big = np.flatnonzero((hi_u - lo_u) >= atoms)
        if big.size:
            # each atom x0 gets the forward knots x0 - d -> u_lo, x0 -> mid, x0 + d -> u_hi (d tiny), so the forward
            # map stays strictly increasing while the inverse, with x0 +- d snapped to x0, is flat on [t_lo, t_hi];
            # knots interpolated inside the jump would smear the atom and are dropped
            d = 1e-6 * max(float(xs[-1] - xs[0]), 1e-30)
            keep = np.ones(kx.shape, dtype=bool)
            add_x, add_u = [], []
            for i in big:
                x0 = xs[i]
                keep &= ~((ku > lo_u[i]) & (ku < hi_u[i])) & ~((kx >= x0 - 2 * d) & (kx <= x0 + 2 * d))
                add_x += [x0 - d, x0, x0 + d]
                add_u += [lo_u[i], u[i], hi_u[i]]
            kx = np.concatenate([kx[keep], add_x])
            ku = np.concatenate([ku[keep], add_u])
            order = np.argsort(kx, kind="stable")
            kx, ku = kx[order], np.maximum.accumulate(ku[order])
            atom_rows = np.stack([xs[big], np.full(big.size, d), np.zeros(big.size)], axis=1)
    # keep the targets strictly increasing even where the CDF is flat (negative weights)
    ku = np.clip(ku, tail, 1.0 - tail)
    kt = ndtri(ku) if target == "gaussian" else ku
    kx, kt = _strict_float32(kx), _strict_float32(kt)
    for row in atom_rows:  # the atom's interval in target space, read off the final knots
        j = int(np.argmin(np.abs(kx - row[0])))
        row[1], row[2] = kt[max(j - 1, 0)], kt[min(j + 1, len(kt) - 1)]
    return kx, kt, atom_rows


def _cdf_jumps(xs: np.ndarray, u_mid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CDF just below and at each distinct value, from the mid-jump values of :func:`weighted_cdf`."""
    hi = np.empty_like(u_mid)
    lo = np.empty_like(u_mid)
    prev = 0.0
    for i, m in enumerate(u_mid):  # mid = (lo + hi) / 2 with lo = previous hi
        lo[i] = prev
        hi[i] = min(max(2.0 * m - prev, prev), 1.0)
        prev = hi[i]
    return lo, hi


def _inverse_knots(kx: np.ndarray, kt: np.ndarray, atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(t, x)`` of the inverse map: the forward knots with each atom's neighbours snapped onto it, so the
    inverse is exactly ``x0`` on the atom's interval ``[t_lo, t_hi]``."""
    x = np.array(kx, dtype=np.float64)
    for x0, t_lo, t_hi in atoms:
        x[(kt >= t_lo) & (kt <= t_hi)] = x0
    return kt, x


def _strict_float32(k: np.ndarray) -> np.ndarray:
    """Round knots to float32 and nudge them to be strictly increasing there (the graph runs in float32)."""
    k = np.asarray(k, dtype=np.float32).copy()
    for i in range(1, k.size):
        if not k[i] > k[i - 1]:
            k[i] = np.nextafter(k[i - 1], np.float32(np.inf))
    return k.astype(np.float64)


class _PiecewiseLinear(nn.Module):
    """Monotone piecewise-linear map per column through knots ``(x_k, y_k)``, clamped to the end knots.

    The segment holding ``x`` is found by a two-level count (``x >= start`` over ``sqrt(K)`` block starts, then over
    the ``sqrt(K)`` starts inside that block, gathered), so a row costs ``O(sqrt(K))`` comparisons and three gathers
    instead of ``O(K)`` clamps; every knot maps exactly onto its ``y_k``. NaN inputs stay NaN.
    """

    def __init__(self, src: list[np.ndarray], dst: list[np.ndarray],
                 snap: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__()
        f = len(src)
        n = max(len(k) for k in src)  # segment starts per column: every knot (the last one with slope 0)
        self.block = max(int(np.ceil(np.sqrt(n))), 1)
        m = -(-n // self.block)
        start = np.full((f, m * self.block), np.inf)
        slope = np.zeros((f, m * self.block))
        ystart = np.zeros((f, m * self.block))
        for i, (kx, ky) in enumerate(zip(src, dst, strict=True)):
            k = len(kx)
            start[i, :k] = kx
            ystart[i, :k], ystart[i, k:] = ky, ky[-1]
            slope[i, :k - 1] = np.diff(ky) / np.diff(kx)

        def buf(name: str, a: np.ndarray, dtype: torch.dtype = torch.float32) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(a), dtype=dtype))

        buf("lo", [k[0] for k in src])  # [F] clamp range
        buf("hi", [k[-1] for k in src])
        buf("coarse", start[:, ::self.block])  # [F, M] first start of each block (+inf past the knots)
        buf("fine", start.reshape(f * m, self.block))  # [F*M, B] the starts, block by block
        buf("row0", np.arange(f) * m, torch.int64)  # [F] first block row of each column
        buf("start", start.reshape(-1))  # [F*M*B] flat per-segment tables
        buf("slope", slope.reshape(-1))
        buf("ystart", ystart.reshape(-1))
        self.snapping = snap is not None
        if snap is not None:  # inputs inside [lo, hi] give exactly val (atoms)
            self.register_buffer("snap_lo", snap[0])  # [F, A]
            self.register_buffer("snap_hi", snap[1])
            self.register_buffer("snap_val", snap[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = torch.minimum(torch.maximum(x, self.lo), self.hi)
        xe = xc.unsqueeze(-1)
        row = self.row0 + ((xe >= self.coarse).sum(-1) - 1).clamp(min=0)  # block holding x
        seg = row * self.block + ((xe >= self.fine[row]).sum(-1) - 1).clamp(min=0)
        y = self.ystart[seg] + self.slope[seg] * (xc - self.start[seg])
        if self.snapping:
            hit = (xe >= self.snap_lo) & (xe <= self.snap_hi)
            y = torch.where(hit.any(-1), (hit.to(y.dtype) * self.snap_val).sum(-1), y)
        return y


class QuantileTransform(nn.Module):
    """Per-column weighted quantile transform (physical units -> ``target`` space); see the module doc."""

    def __init__(self, knots_x: list[np.ndarray], knots_t: list[np.ndarray], target: str = "gaussian",
                 atoms: list[np.ndarray] | None = None) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose from {TARGETS}")
        self.target = target
        self.knots_x = [np.asarray(k, dtype=np.float64) for k in knots_x]
        self.knots_t = [np.asarray(k, dtype=np.float64) for k in knots_t]
        self.atoms = [np.asarray(a, dtype=np.float64).reshape(-1, 3) for a in atoms] if atoms else [
            np.empty((0, 3)) for _ in knots_x]
        inv = [_inverse_knots(kx, kt, a) for kx, kt, a in zip(self.knots_x, self.knots_t, self.atoms, strict=True)]
        self.inv_t, self.inv_x = [k[0] for k in inv], [k[1] for k in inv]
        self.fwd = _PiecewiseLinear(self.knots_x, self.knots_t)

    @property
    def n_features(self) -> int:
        return len(self.knots_x)

    @classmethod
    def fit(cls, x: np.ndarray, weights: np.ndarray | None = None, n_knots: int = 256,
            target: str = "gaussian", tail: float = 1e-4, atoms: float = 0.0,
            max_discrete: int = 0, tail_knots: int = 0) -> QuantileTransform:
        """Fit on ``x`` [N, F] with optional per-row ``weights`` (may be negative); ``atoms`` > 0 keeps values
        holding at least that fraction of the weight as exact point masses of the inverse (module doc).
        Columns with at most ``max_discrete`` distinct values are discrete: every value is an atom, so the
        inverse is the staircase inverse CDF (only training values come out, at their frequencies).
        ``tail_knots`` > 0 adds that many knots per tail (:func:`tail_grid`) and maps the extreme values to their
        own quantiles instead of ``tail``: a generator's tails then follow the sample's, where the default grid
        fills the outermost ``1 / (n_knots - 1)`` of the weight uniformly up to the most extreme value."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]

        def col_atoms(j: int) -> float:
            if max_discrete and 1 < len(np.unique(x[:, j][np.isfinite(x[:, j])])) <= max_discrete:
                return 1e-300  # every distinct value
            return atoms

        knots = [_column_knots(x[:, j], weights, n_knots, target, tail, col_atoms(j), tail_knots)
                 for j in range(x.shape[1])]
        return cls([k[0] for k in knots], [k[1] for k in knots], target, [k[2] for k in knots])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fwd(x)

    def inverse(self) -> _PiecewiseLinear:
        """The inverse map (``target`` space -> physical units) as its own exportable module."""
        snap = None
        n_atoms = max(len(a) for a in self.atoms) if self.atoms else 0
        if n_atoms:
            lo = torch.full((self.n_features, n_atoms), torch.inf)
            hi = torch.full((self.n_features, n_atoms), -torch.inf)
            val = torch.zeros((self.n_features, n_atoms))
            for j, atoms in enumerate(self.atoms):
                for k, (x0, t_lo, t_hi) in enumerate(atoms):
                    lo[j, k], hi[j, k], val[j, k] = float(np.float32(t_lo)), float(np.float32(t_hi)), float(x0)
            snap = (lo, hi, val)
        return _PiecewiseLinear(self.inv_t, self.inv_x, snap=snap)

    # -- numpy convenience (float64, for training-time use) --
    def transform(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Forward map; with ``rng``, atoms are spread uniformly in quantile over their interval (training)."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        out = np.stack([np.interp(x[:, j], kx, kt) for j, (kx, kt) in
                        enumerate(zip(self.knots_x, self.knots_t, strict=True))], axis=1)
        if rng is not None:
            for j, atoms in enumerate(self.atoms):
                for x0, t_lo, t_hi in atoms:
                    hit = x[:, j] == x0
                    if hit.any():
                        out[hit, j] = self._spread(t_lo, t_hi, rng.random(int(hit.sum())))
        return out

    def _spread(self, t_lo: float, t_hi: float, v: np.ndarray) -> np.ndarray:
        if self.target == "gaussian":
            from scipy.special import ndtr

            a, b = ndtr(t_lo), ndtr(t_hi)
            return ndtri(a + v * (b - a))
        return t_lo + v * (t_hi - t_lo)

    def inverse_transform(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64).reshape(len(t), -1)
        return np.stack([np.interp(t[:, j], kt, kx) for j, (kt, kx) in
                         enumerate(zip(self.inv_t, self.inv_x, strict=True))], axis=1)

    def state(self) -> dict:
        """A picklable description (for checkpoints); rebuild with :meth:`from_state`."""
        return {"target": self.target, "knots_x": [k.tolist() for k in self.knots_x],
                "knots_t": [k.tolist() for k in self.knots_t], "atoms": [a.tolist() for a in self.atoms]}

    @classmethod
    def from_state(cls, state: dict) -> QuantileTransform:
        return cls([np.asarray(k) for k in state["knots_x"]], [np.asarray(k) for k in state["knots_t"]],
                   state["target"], [np.asarray(a) for a in state.get("atoms", [])] or None)
