"""The one ``threads`` rule, for every ``threads`` setting of params.yaml (``models.<NAME>.threads``,
``runtime.threads``): the CPU threads a job may use; ``0`` means all cores the job is allotted, i.e. its CPU
affinity mask (a Slurm allocation, a ``taskset``), never more. The workflow grants a model job its model's
``threads`` (0: every core, which Snakemake caps to ``--cores``) and exports the grant as ``FLASHSIM_THREADS``;
a job uses the grant when there is one, else its configured value. Documented in docs/models.md ("Threads")."""

from __future__ import annotations

import os

ENV = "FLASHSIM_THREADS"  # the workflow's grant to a job (rules/common.smk MODEL_JOB)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a batch job's allocation), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def granted() -> int:
    """The workflow's grant (``FLASHSIM_THREADS``), 0 when there is none."""
    value = os.environ.get(ENV, "").strip()
    return int(value) if value.isdigit() else 0


def job_threads(configured: int | None = 0) -> int:
    """The threads a job uses: the workflow's grant, else ``configured``; 0 (or None) = all usable cores; at most
    the usable cores."""
    cores = usable_cores()
    n = granted() or int(configured or 0)
    return min(n, cores) if n > 0 else cores
