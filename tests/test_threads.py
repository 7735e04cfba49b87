"""The one threads rule (flashsim.threads): the workflow's grant, else the configured value; 0 = every core of the
job's affinity mask; never more than those cores. Torch follows it."""

from __future__ import annotations

import os

import pytest
import torch

from flashsim.threads import ENV, job_threads, usable_cores
from flashsim.training import set_threads


@pytest.fixture
def one_core():
    """This process restricted to one CPU (as a Slurm allocation or taskset would), restored afterwards."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mask)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mask)


def test_zero_means_the_allotted_cores(monkeypatch, one_core):
    monkeypatch.delenv(ENV, raising=False)
    assert usable_cores() == 1
    assert job_threads(0) == 1 and job_threads(None) == 1
    assert job_threads(8) == 1  # never more than allotted


def test_grant_wins_over_the_configured_value(monkeypatch):
    cores = usable_cores()
    monkeypatch.delenv(ENV, raising=False)
    assert job_threads(0) == cores and job_threads(1) == 1
    monkeypatch.setenv(ENV, "1")
    assert job_threads(0) == 1 and job_threads(4) == 1


def test_torch_follows_the_rule(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(ENV, "1")
        assert set_threads(0) == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv(ENV)
        assert set_threads(0) == usable_cores() == torch.get_num_threads()
        assert set_threads(None) == torch.get_num_threads()  # no setting, no grant: left as it is
    finally:
        torch.set_num_threads(before)
