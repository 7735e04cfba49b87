"""Sample kinds of the reference detector simulation and their deterministic random streams.

A kind's module defines::

    def chunks(n: int, chunk_size: int, rng_for: Callable[[int], np.random.Generator],
               options: dict) -> Iterator[dict[str, np.ndarray | awkward.Array]]

yielding successive chunks (together ``n`` entries) of contract-named columns; chunk ``i`` must draw only from
``rng_for(i)`` so that output is bit-reproducible for a given (seed, sample, chunk_size) and chunks can be made
independently. ``options`` is the sample's entry in ``params.yaml`` (``detsim.samples.<name>``), e.g. ``channel``.
A kind whose file entries are not its units of ``n`` (the signal kind writes 4 entries per decay) sets
``ENTRIES_PER_UNIT`` (default 1) and ``UNIT`` (default "entries"), for the progress bar.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from types import ModuleType

import numpy as np

KINDS: dict[str, str] = {
    "tracking": "flashsim.detsim.tracking",
    "signal": "flashsim.detsim.signal",
    "ghost": "flashsim.detsim.ghost",
    "pid_calib": "flashsim.detsim.calib",
    "ecal": "flashsim.detsim.ecal",
}


def kind_module(kind: str) -> ModuleType:
    return importlib.import_module(KINDS[kind])


def stream_key(name: str) -> int:
    """A stable 64-bit integer for a stream name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def rng_factory(seed: int, sample: str) -> Callable[[int], np.random.Generator]:
    """``rng_for(i)``: the independent generator of chunk ``i`` of ``sample`` under master ``seed``."""

    def rng_for(i: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream_key(sample), i])))

    return rng_for
