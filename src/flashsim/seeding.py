"""Deterministic random streams: named, independent sub-streams of the master seed (``params.yaml`` ``seed``).

Used by the reference simulation (one stream per sample and chunk) and by the runtime (particle gun, batches),
so that outputs are bit-reproducible and independent of process, ordering and chunking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np


def stream_key(name: str) -> int:
    """A stable 64-bit integer for a stream name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def rng_factory(seed: int, sample: str) -> Callable[[int], np.random.Generator]:
    """``rng_for(i)``: the independent generator of chunk ``i`` of ``sample`` under master ``seed``."""

    def rng_for(i: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream_key(sample), i])))

    return rng_for
