"""Progress of long commands: a tqdm bar on a terminal, one log line per step in a batch log.

tqdm hides itself when stderr is not a terminal (Slurm, Snakemake logs), so a batch user would see nothing for
hours. :class:`Progress` writes instead one ``INFO`` line per epoch or chunk, e.g.::

    pid_rich_K: epoch 3/20 loss=0.4123 val_loss=0.4311 | 1.20 s/epoch, 3.6 s elapsed, ETA 20.4 s
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("flashsim.progress")


def on_terminal() -> bool:
    """Whether stderr is an interactive terminal (then tqdm draws a bar)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Progress:
    """``total`` steps of ``unit`` (``epoch`` steps are counted one by one, other units by size).

    On a terminal: a tqdm bar with the metrics as postfix. Otherwise (or with ``lines=True``): one log line per
    :meth:`update` with the position, the metrics, the time per step, the elapsed time and the ETA.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "epoch", initial: int = 0,
                 lines: bool | None = None, enabled: bool = True, max_metrics: int = 6) -> None:
        self.total, self.desc, self.unit, self.n, self.max_metrics = total, desc, unit, initial, max_metrics
        self.enabled = enabled
        self.lines = (not on_terminal()) if lines is None else lines
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.start = initial
        self.bar = None
        if enabled and not self.lines:
            from tqdm.auto import tqdm

            scale = unit != "epoch"
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=f" {unit}" if scale else unit,
                            unit_scale=scale, mininterval=1.0)

    def update(self, n: int = 1, metrics: Mapping[str, Any] | None = None) -> None:
        """``n`` more steps done, with the latest ``metrics`` (losses, validation metric, ...)."""
        self.n += n
        now = time.perf_counter()
        step_seconds, self.last = now - self.last, now
        shown = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        shown = dict(list(shown.items())[:self.max_metrics])
        if not self.enabled:
            return
        if self.bar is not None:
            if shown:
                self.bar.set_postfix({k: _value(v) for k, v in shown.items()}, refresh=False)
            self.bar.update(n)
            return
        elapsed = now - self.t0
        done = self.n - self.start
        if self.unit == "epoch":
            where = f"epoch {self.n}/{self.total}" if self.total else f"epoch {self.n}"
            speed = f"{step_seconds:.2f} s/epoch"
        else:
            pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
            where = f"{self.n:,}/{self.total:,} {self.unit}{pct}" if self.total else f"{self.n:,} {self.unit}"
            speed = f"{done / elapsed:.3g} {self.unit}/s" if elapsed > 0 else ""
        eta = ""
        if self.total and done > 0:
            eta = f", ETA {_duration(elapsed / done * max(self.total - self.n, 0))}"
        values = " ".join(f"{k}={_value(v)}" for k, v in shown.items())
        log.info("%s: %s%s | %s, %s elapsed%s", self.desc, where, f" {values}" if values else "", speed,
                 _duration(elapsed), eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lightgbm_callback(desc: str, total: int, every: int | None = None):
    """A LightGBM callback reporting the boosting rounds through :class:`Progress` (every ``every`` rounds,
    default: about 20 lines per training) with the validation metrics."""
    every = every or max(1, total // 20)
    state: dict[str, Progress] = {}

    def callback(env) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = Progress(total, desc, unit="rounds")
        i = env.iteration + 1
        if i % every and i != env.end_iteration:
            return
        metrics = {f"{data}_{name}": float(value) for data, name, value, *_ in env.evaluation_result_list or []}
        bar.update(i - bar.n, metrics)
        if i == env.end_iteration:
            bar.close()

    callback.order = 25  # after record_evaluation (20), before early stopping (30)
    return callback
