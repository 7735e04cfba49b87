"""Selection cuts ``VARIABLE OP NUMBER`` (e.g. ``PIDK > 5``): one parser for the PID validation of the models and
for the end-to-end physics check. A value that is NaN or infinite passes no cut."""

from __future__ import annotations

import re

import numpy as np

from flashsim.errors import ConfigError

OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "==": np.equal,
       "!=": np.not_equal}
_CUT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+)\s*$")


class CutError(ConfigError, ValueError):
    """A cut that is not ``VARIABLE OP NUMBER``."""


def parse_cut(cut: str) -> tuple[str, str, float]:
    """``(variable, op, threshold)`` of a cut; ``op`` is a key of :data:`OPS`."""
    m = _CUT.match(cut)
    if not m:
        raise CutError(f"cut {cut!r} is not 'VARIABLE OP NUMBER' with OP in {list(OPS)}")
    try:
        return m.group(1), m.group(2), float(m.group(3))
    except ValueError as err:
        raise CutError(f"cut {cut!r}: {m.group(3)!r} is not a number") from err


def passes(values: np.ndarray, cut: str) -> np.ndarray:
    """Boolean pass flags of ``cut`` on the values of its variable (non-finite values fail)."""
    _, op, thr = parse_cut(cut)
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return OPS[op](v, thr) & np.isfinite(v)


def apply_cut(columns: dict[str, np.ndarray], cut: str) -> np.ndarray:
    """Pass flags of ``cut`` on a dict of columns; an unknown variable is a ConfigError."""
    col = parse_cut(cut)[0]
    if col not in columns:
        raise ConfigError(f"cut {cut!r}: unknown column {col!r} (known: {', '.join(columns)})")
    return passes(columns[col], cut)
