"""Training core shared by every torch model: device, seeds, checkpoints, epoch loop.

The loops report per-epoch metrics to the job's run (:class:`flashsim.mlops.runs.Run`: local record + MLflow), or
to any object with its ``log_metrics`` method (:class:`MetricsLog`); this module does not import MLflow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from flashsim.io.atomic import atomic_output
from flashsim.threads import granted, job_threads

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- device and seeds
def choose_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU; or an explicit torch device string (``FLASHSIM_DEVICE`` overrides)."""
    preference = os.environ.get("FLASHSIM_DEVICE", preference)
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch (all devices); return a torch CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use the legacy global)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        with contextlib.suppress(Exception):
            torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA (no grad scaler needed); a no-op context on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(configured: int | None = None) -> int:
    """Set torch's intra-op threads by the threads rule (:func:`flashsim.threads.job_threads`) and return them;
    ``None`` without a workflow grant leaves torch's default."""
    if configured is None and not granted():
        return torch.get_num_threads()
    n = job_threads(configured)
    torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------- what the loops report to
class MetricsLog(Protocol):
    """The part of the job's run (:class:`flashsim.mlops.runs.Run`) that training loops use; a benchmark or a test
    may pass its own object instead."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...


# ---------------------------------------------------------------- checkpoints
class Checkpointer:
    """Atomic ``torch.save`` of a state dict every ``every`` epochs to ``<dir>/checkpoint.pt``; resume with load.

    With a ``key`` (e.g. a hash of the configuration and the training data), a checkpoint written under another
    key is ignored (training starts over) instead of being resumed into a model it does not belong to."""

    def __init__(self, directory: str | Path, every: int = 1, key: str | None = None) -> None:
        self.dir = Path(directory)
        self.every = max(int(every), 1)
        self.path = self.dir / "checkpoint.pt"
        self.key = key

    def due(self, epoch: int, last: bool = False) -> bool:
        return last or (epoch + 1) % self.every == 0

    def save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.path) as tmp:
            torch.save({**state, "key": self.key} if self.key is not None else state, tmp)

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        ck = torch.load(self.path, map_location="cpu", weights_only=False)
        if self.key is not None and ck.get("key") != self.key:
            log.warning("%s was written for another configuration or training data: starting over", self.path)
            return None
        return ck


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),  # noqa: NPY002
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched=None) -> torch.Tensor:
    """One gradient step on ``loss`` (and one scheduler step); returns the detached loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return loss.detach()


def state_functions(**parts) -> tuple[Callable[[], dict], Callable[[dict], None]]:
    """``(get_state, set_state)`` for :func:`epoch_loop` over named modules, optimizers, schedulers (``state_dict``)
    and ``torch.Generator`` objects (``get_state``)."""

    def get_state() -> dict:
        return {k: v.state_dict() if hasattr(v, "state_dict") else v.get_state() for k, v in parts.items()}

    def set_state(state: dict) -> None:
        for k, v in parts.items():
            (v.load_state_dict if hasattr(v, "load_state_dict") else v.set_state)(state[k])

    return get_state, set_state


def epoch_loop(n_epochs: int, epoch_fn: Callable[[int], dict[str, float]], *,
               get_state: Callable[[], dict], set_state: Callable[[dict], None],
               checkpointer: Checkpointer | None = None, ctx: MetricsLog | None = None,
               desc: str = "train", stop_after: int | None = None) -> list[dict[str, float]]:
    """Run ``epoch_fn(epoch) -> metrics`` for epochs not yet done, resuming from the checkpoint if present.

    The checkpoint holds ``get_state()`` (model/optimizer/etc.), the RNG states and the metrics history; it is
    written atomically every ``checkpointer.every`` epochs and after the last one. ``stop_after`` ends the run
    after that many epochs in this call (to test resumption). Returns the full metrics history.
    """
    from flashsim.progress import Progress

    start, history = 0, []
    if checkpointer is not None and (ck := checkpointer.load()) is not None:
        set_state(ck["state"])
        set_rng_state(ck["rng"])
        start, history = ck["epoch"] + 1, ck["history"]
        log.info("resuming %s from epoch %d", desc, start)
    done_here = 0
    bar = Progress(n_epochs, desc, initial=start)  # tqdm on a terminal, one log line per epoch in a batch log
    for epoch in range(start, n_epochs):
        t0 = time.perf_counter()
        metrics = dict(epoch_fn(epoch))
        metrics["epoch_seconds"] = time.perf_counter() - t0
        history.append({"epoch": epoch, **metrics})
        if ctx is not None:
            ctx.log_metrics(metrics, step=epoch)
        bar.update(1, {k: v for k, v in metrics.items() if k != "epoch_seconds"})
        last = epoch == n_epochs - 1
        done_here += 1
        stop = stop_after is not None and done_here >= stop_after
        if checkpointer is not None and (checkpointer.due(epoch, last) or stop):
            checkpointer.save({"state": get_state(), "rng": rng_state(), "epoch": epoch, "history": history})
        if stop:
            break
    bar.close()
    return history


# ---------------------------------------------------------------- data on device
class DeviceData:
    """Named tensors kept on the training device; random mini-batches drawn by index on the device."""

    def __init__(self, device: torch.device, **arrays: np.ndarray | torch.Tensor) -> None:
        self.device = device
        self.tensors = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).to(device)
                        for k, v in arrays.items() if v is not None}
        sizes = {len(t) for t in self.tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"arrays of different lengths: {sizes}")
        self.n = sizes.pop()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                drop_last: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of shuffled batches (permutation drawn on the CPU generator for reproducibility)."""
        perm = torch.randperm(self.n, generator=generator).to(self.device)
        stop = self.n - batch_size + 1 if drop_last and self.n >= batch_size else self.n
        for i in range(0, max(stop, 1), batch_size):
            idx = perm[i:i + batch_size]
            yield {k: t[idx] for k, t in self.tensors.items()}


def normalised_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Per-row weights scaled to mean 1 over the whole training set (ones when ``weights`` is None).

    Losses then use ``(loss_i * w_i).mean()`` per batch: unbiased, and safe with negative sWeights (a batch sum
    of signed weights can be near zero, so batches are never normalised by their own sum).
    """
    if weights is None:
        return np.ones(n, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if not total > 0:
        raise ValueError("the sum of the per-row weights must be positive")
    return (w * (len(w) / total)).astype(np.float32)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``(values * w).mean()`` over rows (and columns) with globally normalised ``weights`` (see above)."""
    if weights is None:
        return values.mean()
    if values.dim() > 1:
        values = values.mean(dim=tuple(range(1, values.dim())))
    return (values * weights).mean()


def signal_probability_weights(features: np.ndarray, sweights: np.ndarray, *, seed: int = 0, folds: int = 2,
                               threads: int = 1, n_estimators: int = 100) -> np.ndarray:
    """Non-negative training weights from signal sWeights: ``E[sw | features]`` estimated by regression.

    For sPlot sWeights (discriminating variable independent of ``features`` within each species) the
    conditional expectation of the sWeight is the signal probability ``P(signal | features)`` in [0, 1]. Any loss
    weighted with it has the same expectation as with the sWeights (``E[sw L(x)] = E[E[sw | x] L(x)]``), hence no
    bias, but it is bounded below and far less noisy, so flexible models cannot overfit negative-weight rows
    (Borisyak & Kazeev, "Machine learning on data with sPlot background subtraction", 2019). ``features`` must hold
    everything the loss depends on (conditions and targets). The regression (LightGBM, squared error) is
    cross-fitted over ``folds`` so a row's weight never comes from a model that saw its own sWeight.
    """
    import lightgbm as lgb

    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    sw = np.asarray(sweights, dtype=np.float64)
    if len(x) != len(sw):
        raise ValueError("features and sweights differ in length")
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, len(sw))
    out = np.empty(len(sw))
    for k in range(folds):
        train, test = fold != k, fold == k
        if not test.any():
            continue
        reg = lgb.LGBMRegressor(n_estimators=n_estimators, learning_rate=0.1, num_leaves=15,
                                min_child_samples=max(50, len(sw) // 2000), subsample=0.8, subsample_freq=1,
                                random_state=seed + k, n_jobs=threads, verbose=-1)
        reg.fit(x[train], sw[train])
        out[test] = reg.predict(x[test])
    return np.clip(out, 0.0, 1.0)
