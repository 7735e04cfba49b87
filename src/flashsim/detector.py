"""The detector a trained model describes: particle species and track-type codes, and the ECAL geometry.

Codes are conventions of the data contract (:mod:`flashsim.io.contract`): ``mcID`` is a signed PDG id, ``type``
a track type. The ECAL geometry describes a real detector, so it comes from configuration (``params.yaml``
``detector.ecal``, LHCb-like defaults) through :func:`ecal_geometry`; the ECAL models bake the configured
geometry into their exported graph and record it in their model card. The reference simulation
(:mod:`flashsim.detsim`) consumes the same geometry; nothing here depends on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from flashsim.errors import ConfigError

# species name -> |PDG id| (the contract's mcID convention: negative leptons and positive hadrons are positive)
SPECIES_PDG: dict[str, int] = {"e": 11, "mu": 13, "pi": 211, "K": 321, "p": 2212}
PDG_SPECIES: dict[int, str] = {v: k for k, v in SPECIES_PDG.items()}
SPECIES: tuple[str, ...] = tuple(SPECIES_PDG)

# track type name -> code of the contract's ``type`` column (the efficiency model's class order)
TRACK_TYPES: dict[str, int] = {"none": 0, "long": 3, "upstream": 4, "downstream": 5}
TRACK_TYPE_CODES: tuple[int, ...] = tuple(TRACK_TYPES.values())
TRACK_TYPE_NAMES: tuple[str, ...] = tuple(TRACK_TYPES)
RECONSTRUCTED_TYPES: tuple[int, ...] = tuple(c for c in TRACK_TYPE_CODES if c)  # long, upstream, downstream


@dataclass(frozen=True)
class EcalRegion:
    """A rectangular ECAL region centred on the beam: half-widths (mm) and the size of its square cells (mm)."""

    half_x: float
    half_y: float
    cell: float


@dataclass(frozen=True)
class EcalGeometry:
    """ECAL face at ``z`` (mm from the nominal interaction point), ``regions`` nested from the inner one
    outwards (a point takes the cell of the innermost region containing it, the outer cell outside all), and a
    rectangular beam hole (half-widths, mm). Defaults: LHCb-like (the schema's defaults of ``detector.ecal``)."""

    z: float = 12620.0
    regions: tuple[EcalRegion, ...] = (EcalRegion(969.6, 727.2, 40.4), EcalRegion(1939.2, 1212.0, 60.6),
                                       EcalRegion(3878.4, 3151.2, 121.2))
    beam_hole: tuple[float, float] = (242.4, 242.4)

    @property
    def cell_sizes(self) -> tuple[float, ...]:
        return tuple(r.cell for r in self.regions)

    def cell_size(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cell size (mm) of the region containing the point (x, y) on the face; outer cells outside."""
        ax, ay = np.abs(x), np.abs(y)
        size = np.full(np.shape(x), self.regions[-1].cell, dtype=np.float64)
        for r in reversed(self.regions[:-1]):
            size = np.where((ax < r.half_x) & (ay < r.half_y), r.cell, size)
        return size

    def in_acceptance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where (x, y) is on the ECAL: inside the outer boundary and outside the beam hole."""
        ax, ay = np.abs(x), np.abs(y)
        outer = (ax < self.regions[-1].half_x) & (ay < self.regions[-1].half_y)
        hole = (ax < self.beam_hole[0]) & (ay < self.beam_hole[1])
        return outer & ~hole

    def to_dict(self) -> dict:
        """The ``detector.ecal`` form (also what a model card records)."""
        return {"z": self.z, "regions": [asdict(r) for r in self.regions], "beam_hole": list(self.beam_hole)}

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "detector.ecal") -> EcalGeometry:
        """From the ``detector.ecal`` form (missing keys take the defaults); ConfigError naming ``where``."""
        d = dict(d or {})
        unknown = set(d) - {"z", "regions", "beam_hole"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: beam_hole, regions, z)")
        default = cls()
        try:
            regions = tuple(EcalRegion(float(r["half_x"]), float(r["half_y"]), float(r["cell"]))
                            for r in d["regions"]) if "regions" in d else default.regions
            geo = cls(float(d.get("z", default.z)), regions, tuple(float(v) for v in d.get("beam_hole",
                                                                                            default.beam_hole)))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err!r} (regions are {{half_x, half_y, cell}} in mm)") from err
        geo.check(where)
        return geo

    def check(self, where: str = "detector.ecal") -> None:
        """ConfigError unless the regions are non-empty, positive and nested, the hole inside the inner one."""
        if not self.regions or len(self.beam_hole) != 2 or self.z <= 0:
            raise ConfigError(f"{where}: need z > 0, at least one region and a beam_hole [half_x, half_y]")
        for i, r in enumerate(self.regions):
            if min(r.half_x, r.half_y, r.cell) <= 0:
                raise ConfigError(f"{where}/regions/{i}: half_x, half_y and cell must be positive")
            if i and (r.half_x < self.regions[i - 1].half_x or r.half_y < self.regions[i - 1].half_y):
                raise ConfigError(f"{where}/regions/{i}: regions must be nested, inner to outer")
        if self.beam_hole[0] >= self.regions[0].half_x or self.beam_hole[1] >= self.regions[0].half_y:
            raise ConfigError(f"{where}/beam_hole: must lie inside the inner region")


LHCB_ECAL = EcalGeometry()
"""The LHCb-like default geometry (the schema's defaults of ``detector.ecal``)."""


def ecal_geometry(params: dict | None) -> EcalGeometry:
    """The configured ECAL geometry: ``params["detector"]["ecal"]`` (defaults where absent)."""
    return EcalGeometry.from_dict(((params or {}).get("detector") or {}).get("ecal"))


# ---------------------------------------------------------------- RICH radiators
# |PDG| masses (MeV/c^2) of the charged species (the mass hypotheses of the PID response)
SPECIES_MASS: dict[str, float] = {"e": 0.51099895, "mu": 105.6583755, "pi": 139.57039, "K": 493.677,
                                  "p": 938.27208816}

RICH_RADIATORS: dict[str, float] = {"rich1": 1.4e-3, "rich2": 5.0e-4}
"""Radiator name -> refractive index - 1, LHCb-like (RICH1 C4F10, RICH2 CF4; the schema's defaults of
``detector.rich``)."""


def cherenkov_threshold(mass: float, n_minus_1: float) -> float:
    """Cherenkov threshold momentum ``m / sqrt(n^2 - 1)`` (MeV/c) of a particle of ``mass`` (MeV/c^2)."""
    n = 1.0 + n_minus_1
    return float(mass / np.sqrt(n * n - 1.0))


def rich_radiators(params: dict | None) -> dict[str, float]:
    """The configured RICH radiators: name -> n - 1 (``params["detector"]["rich"]``, defaults where absent)."""
    rich = ((params or {}).get("detector") or {}).get("rich")
    if rich is None:
        return dict(RICH_RADIATORS)
    out = {}
    for name, d in rich.items():
        try:
            out[name] = float(d["n_minus_1"])
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"detector.rich/{name}: need {{n_minus_1: number > 0}}, got {d!r}") from err
        if not out[name] > 0:
            raise ConfigError(f"detector.rich/{name}/n_minus_1: must be > 0, got {out[name]}")
    return out
