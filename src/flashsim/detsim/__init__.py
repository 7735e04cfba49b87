"""Reference detector simulation: a seeded, vectorized, chunked LHCb-like detector with callable truth.

Each sample kind is produced by one module (see :mod:`flashsim.detsim.samples`) that yields chunks of
columns named after the data contract (:mod:`flashsim.io.contract`).
"""
