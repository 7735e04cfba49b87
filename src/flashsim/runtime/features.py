"""Model inputs computed on the device from generator-level columns (torch, vectorized, float32).

A model card names its input features; :func:`feature` resolves each name to a column: a generator-level
contract column as is (``mc_px``, ``nTracks``, ...), a quantity derived from them (``p``, ``eta``, ``tx``, the
true closest-to-beam state, species flags, ...), or a column produced by an earlier stage of the chain
(``type``, reconstructed quantities, PID variables). Derived quantities are cached per batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flashsim.detector import SPECIES_PDG
from flashsim.detector import TRACK_TYPE_CODES as TYPE_CODES  # efficiency classes: none, long, upstream, downstream
from flashsim.detector import TRACK_TYPE_NAMES as TYPE_NAMES


class Batch:
    """Columns of one batch of particles on one device, with lazily derived features."""

    def __init__(self, columns: dict[str, torch.Tensor]) -> None:
        self.columns = dict(columns)
        self.n = len(next(iter(columns.values()))) if columns else 0

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.columns:
            fn = DERIVED.get(name)
            if fn is None:
                raise KeyError(name)
            self.columns[name] = fn(self).to(torch.float32)
        return self.columns[name]

    def f32(self, name: str) -> torch.Tensor:
        return self[name].to(torch.float32)

    def matrix(self, names: list[str], rows: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, F]`` float32 of the named features (optionally only ``rows``), contiguous."""
        cols = [self.f32(n) if rows is None else self.f32(n)[rows] for n in names]
        return torch.stack(cols, dim=1).contiguous()

    def set(self, name: str, values: torch.Tensor) -> None:
        self.columns[name] = values


def _p(b: Batch) -> torch.Tensor:
    px, py, pz = b.f32("mc_px"), b.f32("mc_py"), b.f32("mc_pz")
    return torch.sqrt(px * px + py * py + pz * pz)


def _pt(b: Batch) -> torch.Tensor:
    px, py = b.f32("mc_px"), b.f32("mc_py")
    return torch.sqrt(px * px + py * py)


def _eta(b: Batch) -> torch.Tensor:
    return torch.asinh(b.f32("mc_pz") / b["mc_pt"])


def _zc(b: Batch) -> torch.Tensor:
    tx, ty = b["mc_tx"], b["mc_ty"]
    return b.f32("mc_z") - (b.f32("mc_x") * tx + b.f32("mc_y") * ty) / (tx * tx + ty * ty)


def _species_flag(pdg: int) -> Callable[[Batch], torch.Tensor]:
    return lambda b: (b["mcID"].abs() == pdg).to(torch.float32)


def _type_flag(code: int) -> Callable[[Batch], torch.Tensor]:
    return lambda b: (b["type"] == code).to(torch.float32)


DERIVED: dict[str, Callable[[Batch], torch.Tensor]] = {
    "mc_p": _p,
    "mc_pt": _pt,
    "mc_eta": _eta,
    "mc_phi": lambda b: torch.atan2(b.f32("mc_py"), b.f32("mc_px")),
    "mc_tx": lambda b: b.f32("mc_px") / b.f32("mc_pz"),
    "mc_ty": lambda b: b.f32("mc_py") / b.f32("mc_pz"),
    "mc_log_p": lambda b: torch.log(b["mc_p"]),
    "mc_log10_p": lambda b: torch.log10(b["mc_p"]),
    "mc_qop": lambda b: b.f32("mc_charge") / b["mc_p"],
    "mc_abs_id": lambda b: b["mcID"].abs().to(torch.float32),
    # the true closest-to-beam state: straight line from the origin to the point closest to the beam line x = y = 0
    "true_z_ClosestToBeam": _zc,
    "true_x_ClosestToBeam": lambda b: b.f32("mc_x") + b["mc_tx"] * (b["true_z_ClosestToBeam"] - b.f32("mc_z")),
    "true_y_ClosestToBeam": lambda b: b.f32("mc_y") + b["mc_ty"] * (b["true_z_ClosestToBeam"] - b.f32("mc_z")),
    "true_tx_ClosestToBeam": lambda b: b["mc_tx"],
    "true_ty_ClosestToBeam": lambda b: b["mc_ty"],
    "true_qop_ClosestToBeam": lambda b: b["mc_qop"],
    **{f"is_{s}": _species_flag(pdg) for s, pdg in SPECIES_PDG.items()},
    **{f"is_{n}": _type_flag(c) for n, c in zip(TYPE_NAMES[1:], TYPE_CODES[1:], strict=True)},
}
# aliases: generator-level quantities by their short names
for _short in ("p", "pt", "eta", "phi", "tx", "ty", "log_p", "log10_p", "qop"):
    DERIVED.setdefault(_short, (lambda key: lambda b: b[key])(f"mc_{_short}"))
DERIVED.setdefault("logp", DERIVED["log_p"])
DERIVED.setdefault("charge", lambda b: b.f32("mc_charge"))
DERIVED.setdefault("q", lambda b: b.f32("mc_charge"))


def species_rows(batch: Batch, species: str) -> torch.Tensor:
    """Boolean mask of the particles of ``species`` (by |mcID|)."""
    return batch["mcID"].abs() == SPECIES_PDG[species]
