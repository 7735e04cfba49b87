"""Covariance family: a conditional generator of the 5x5 closest-to-beam covariance, positive definite by
construction.

The core generates ``log(var_i)`` (5) and ``atanh`` of the canonical partial correlations ``z_ij`` (10, i > j);
the graph assembles the lower-triangular correlation factor ``L`` (``L_ij = z_ij sqrt(prod_{k<j} (1 - z_ik^2))``,
``L_ii = sqrt(prod_{k<i} (1 - z_ik^2))`` > 0) and ``C = D (L L^T + eps I) D`` with ``D = diag(exp(log_var / 2))``,
so every output is a valid covariance — also in float32: ``eps = 1e-5`` exceeds the rounding error of the
correlation matrix, so even near-singular correlations stay positive definite (variances inflated by 1e-5).
ONNX output ``y``: the 15 upper-triangle elements in contract order
(``cov_ClosestToBeam_i_j``, i <= j, row-major).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from flashsim.io.contract import COV_UNITS
from flashsim.models import generator
from flashsim.models.base import DERIVED_UNITS

N = 5
PAIRS = [(i, j) for i in range(N) for j in range(i)]  # strictly lower, row-major
UPPER = [(i, j) for i in range(N) for j in range(i, N)]
Z_MAX = 1 - 1e-5
JITTER = 1e-5  # added to the correlation matrix's diagonal: positive definite after float32 rounding too
CORE_NAMES = [f"logvar_{i}" for i in range(N)] + [f"atanh_pcorr_{i}_{j}" for i, j in PAIRS]
DERIVED_UNITS.update(dict.fromkeys(CORE_NAMES, "1"))
STATE_NAMES = ("x", "y", "tx", "ty", "q/p")


def sigmas_and_correlations(cov_upper: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """[n, 15] upper-triangle covariances -> [n, 15] ``log10(sigma_i)`` (5) and correlations ``rho_ij`` (10), with
    axis labels (the sigmas' units from the data contract). Non-positive variances give NaN."""
    c = np.asarray(cov_upper, dtype=np.float64)
    var = np.stack([c[:, UPPER.index((i, i))] for i in range(N)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sig = np.sqrt(np.where(var > 0, var, np.nan))
        rho = [c[:, UPPER.index((i, j))] / (sig[:, i] * sig[:, j]) for i, j in UPPER if i != j]
    names = [f"log10(sigma_{s} / {u if '/' not in u else f'({u})'})" if u != "1" else f"log10 sigma_{s}"
             for s, u in zip(STATE_NAMES, COV_UNITS, strict=True)]
    names += [f"rho({STATE_NAMES[i]}, {STATE_NAMES[j]})" for i, j in UPPER if i != j]
    return np.concatenate([np.log10(sig), np.stack(rho, axis=1)], axis=1), names


def to_core(cov_upper: np.ndarray) -> np.ndarray:
    """[n, 15] upper-triangle covariances -> [n, 15] core targets (log variances, atanh partial correlations)."""
    c = np.asarray(cov_upper, dtype=np.float64)
    m = np.zeros((len(c), N, N))
    for k, (i, j) in enumerate(UPPER):
        m[:, i, j] = m[:, j, i] = c[:, k]
    var = np.diagonal(m, axis1=1, axis2=2) / (1 + JITTER)  # the exact inverse of the assembly
    sd = np.sqrt(np.clip(var, 1e-300, None))
    r = m / sd[:, :, None] / sd[:, None, :]
    r[:, np.arange(N), np.arange(N)] = 1.0
    L = np.linalg.cholesky(r)
    out = [np.log(np.clip(var, 1e-300, None))]
    zs = []
    for i, j in PAIRS:
        rem = 1.0 - np.sum(L[:, i, :j] ** 2, axis=1)
        zs.append(np.clip(L[:, i, j] / np.sqrt(np.clip(rem, 1e-300, None)) / Z_MAX, -1 + 1e-9, 1 - 1e-9))
    return np.concatenate([out[0], np.arctanh(np.stack(zs, axis=1))], axis=1)


class CovarianceAssembly(nn.Module):
    """Core outputs [N, 15] (log variances, atanh partial correlations) -> upper-triangle covariance [N, 15]."""

    def forward(self, core: torch.Tensor) -> torch.Tensor:
        sd = torch.exp(0.5 * core[:, :N])
        z = torch.tanh(core[:, N:]) * Z_MAX
        L: list[list[torch.Tensor | None]] = [[None] * N for _ in range(N)]
        k = 0
        for i in range(N):
            rem = torch.ones_like(sd[:, 0])
            for j in range(i):
                L[i][j] = z[:, k] * torch.sqrt(rem)
                rem = rem * (1 - z[:, k] * z[:, k])
                k += 1
            L[i][i] = torch.sqrt(rem)
        cols = []
        for a, b in UPPER:
            acc = L[a][0] * L[b][0]
            for c in range(1, a + 1):
                acc = acc + L[a][c] * L[b][c]
            if a == b:
                acc = acc + JITTER
            cols.append(sd[:, a] * sd[:, b] * acc)
        return torch.stack(cols, dim=1)


def assemble_matrix(cov_upper: np.ndarray) -> np.ndarray:
    """[n, 15] upper-triangle elements -> [n, 5, 5] symmetric matrices."""
    c = np.asarray(cov_upper)
    m = np.zeros((len(c), N, N), dtype=c.dtype)
    for k, (i, j) in enumerate(UPPER):
        m[:, i, j] = m[:, j, i] = c[:, k]
    return m


class Family(generator.Family):
    """Targets: ``targets`` (the 15 covariance columns, upper triangle in contract order)."""

    def output_names_core(self) -> list[str]:
        return list(CORE_NAMES)

    def output_names(self) -> list[str]:
        return list(self.cfg["targets"])

    def targets_core(self, df) -> np.ndarray:
        cov = self.targets(df)
        out = np.full((len(cov), len(CORE_NAMES)), np.nan, dtype=np.float32)
        ok = np.isfinite(cov).all(axis=1)
        core = to_core(cov[ok])
        # float32 inputs blur the partial correlations that are constants per track type / charge; quantised to
        # 1e-4 they are recognised as discrete targets (generated by the staircase inverse CDF)
        core[:, N:] = np.round(core[:, N:], 4)
        out[ok] = core
        return out

    def targets(self, df) -> np.ndarray:
        if len(self.cfg["targets"]) != len(UPPER):
            from flashsim.errors import ConfigError

            raise ConfigError(f"models/{self.spec.name}/targets: expected the {len(UPPER)} upper-triangle elements")
        return self._columns(df, self.cfg["targets"], "target")

    def plot_variables(self, reference: np.ndarray, generated: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """The report shows log10 sigma of the five state variables and their ten correlations: the covariance
        elements themselves span decades and mix units, so their linear histograms are single spikes."""
        ref, names = sigmas_and_correlations(reference)
        gen, _ = sigmas_and_correlations(generated)
        return ref, gen, names, ["1"] * len(names)

    def post_module(self) -> nn.Module:
        return CovarianceAssembly()
