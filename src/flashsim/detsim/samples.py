"""Sample kinds of the reference detector simulation and their deterministic random streams.

A kind's module defines::

    def chunks(n: int, chunk_size: int, rng_for: Callable[[int], np.random.Generator],
               options: dict) -> Iterator[dict[str, np.ndarray | awkward.Array]]

yielding successive chunks (together ``n`` entries) of contract-named columns; chunk ``i`` must draw only from
``rng_for(i)`` so that output is bit-reproducible for a given (seed, sample, chunk_size) and chunks can be made
independently. ``options`` is the sample's entry in ``params.yaml`` (``detsim.samples.<name>``), e.g. ``channel``.
A kind whose file entries are not its units of ``n`` (the signal kind writes 4 entries per decay) sets
``ENTRIES_PER_UNIT`` (default 1) and ``UNIT`` (default "entries"), for the progress bar. The random streams
come from :mod:`flashsim.seeding` (re-exported here for the kinds' callers).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from flashsim.seeding import rng_factory, stream_key

KINDS: dict[str, str] = {
    "tracking": "flashsim.detsim.tracking",
    "signal": "flashsim.detsim.signal",
    "ghost": "flashsim.detsim.ghost",
    "pid_calib": "flashsim.detsim.calib",
    "ecal": "flashsim.detsim.ecal",
}


def kind_module(kind: str) -> ModuleType:
    return importlib.import_module(KINDS[kind])


__all__ = ["KINDS", "kind_module", "rng_factory", "stream_key"]  # the seeding helpers, for the kinds' callers
