"""Truth hooks: the true probabilities a classifier is compared with where the reference simulation knows them.

A model entry names its hook (``oracle: acceptance`` in ``params.yaml``); :data:`ORACLES` maps each name to a
function ``frame -> probabilities`` ([N] for binary, [N, C] otherwise). This is the one place outside the
reference simulation that may reach :mod:`flashsim.detsim` (its callable truth); models do not.
Other hooks (e.g. of a test's synthetic sample) are added with :func:`register_oracle`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flashsim.errors import ConfigError

Oracle = Callable[..., np.ndarray]


def acceptance(df) -> np.ndarray:
    """True P(acceptance) of the reference simulation."""
    from flashsim.detsim import truth

    return np.asarray(truth.acceptance_probability(df), dtype=np.float64)


def efficiency(df) -> np.ndarray:
    """True track-type probabilities [none, long, upstream, downstream] given acceptance."""
    from flashsim.detsim import truth

    return np.asarray(truth.track_type_probabilities(df, given_acceptance=True), dtype=np.float64)


def ghost(df) -> np.ndarray:
    """The reference simulation's true ghost probability (the ``true_ghostProb`` column)."""
    return df["true_ghostProb"].to_numpy(np.float64)


ORACLES: dict[str, Oracle] = {"acceptance": acceptance, "efficiency": efficiency, "ghost": ghost}
"""Oracle name (``params.yaml`` ``oracle:``) -> truth hook."""


def register_oracle(name: str, fn: Oracle) -> None:
    """Make ``fn`` available as ``oracle: name`` (e.g. the truth of a test's synthetic sample)."""
    ORACLES[name] = fn


def oracle(name: str, where: str = "oracle") -> Oracle:
    """The hook registered as ``name``; ConfigError naming ``where`` and the known names."""
    if name not in ORACLES:
        raise ConfigError(f"{where}: unknown oracle {name!r}; known: {', '.join(sorted(ORACLES))}")
    return ORACLES[name]
