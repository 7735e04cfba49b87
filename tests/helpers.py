"""Test helpers: a scratch repository, a synthetic prepared sample and prepared samples of the reference simulation.

``scratch_repo(tmp, models)`` writes ``params.yaml`` (with the given ``models:`` section) and the schema into
``tmp``; ``write_synthetic(tmp, "synth", n)`` writes ``results/prepared/synth/{train,val,test}.parquet`` with
columns ``p`` (MeV/c), ``eta``, ``x1``, a binary ``label`` drawn from ``true_prob``, two targets ``y1``/``y2``
that depend on the conditions, and ``sw``: sWeight-like weights (signal rows 1, plus background rows in pairs
of +1/-1 that cancel in expectation), so weighted fits recover the signal distribution; its truth hook is
registered as ``oracle: synth`` (:func:`synth_oracle`). ``write_tracking_sample`` and ``write_prepared_calib``
write prepared samples straight from the reference simulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from flashsim.seeding import rng_factory
from flashsim.validation.truth import register_oracle

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


def scratch_repo(root: str | Path, models: dict, scale: str = "demo", seed: int = 7, **extra) -> Path:
    """A repository in ``root``: this checkout's schema, and params.yaml with ``models`` (and the checkout's
    ``feature_sets``, so entries copied from params.yaml resolve), ``scale``, ``seed`` and ``extra`` sections."""
    root = Path(root)
    extra.setdefault("feature_sets", yaml.safe_load((SCHEMA_DIR.parent / "params.yaml").read_text()).get(
        "feature_sets") or {})
    (root / "schemas").mkdir(parents=True, exist_ok=True)
    for f in SCHEMA_DIR.glob("*.yaml"):
        (root / "schemas" / f.name).write_text(f.read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({"scale": scale, "seed": seed, "models": models, **extra}))
    return root


def synthetic_frame(n: int, rng: np.random.Generator, background: float = 0.0) -> dict[str, np.ndarray]:
    """Signal rows (and ``background`` fraction of +/-1 weighted pairs from a different distribution)."""
    p = np.exp(rng.normal(np.log(2e4), 0.8, n))
    eta = rng.uniform(2.0, 5.0, n)
    x1 = rng.normal(0, 1, n)
    lp = np.log(p / 2e4)
    true_prob = 1 / (1 + np.exp(-(1.2 * lp - 0.8 * (eta - 3.5) + 0.5 * x1)))
    label = (rng.uniform(size=n) < true_prob).astype(np.int32)
    y1 = 0.5 * x1 + (0.2 + 0.1 * eta) * rng.normal(size=n)
    y2 = np.exp(0.3 * lp + 0.4 * rng.normal(size=n))
    cols = {"p": p, "eta": eta, "x1": x1, "label": label, "true_prob": true_prob, "y1": y1, "y2": y2,
            "sw": np.ones(n)}
    nb = int(background * n) // 2 * 2
    if nb:
        bkg = {"p": np.exp(rng.normal(np.log(2e4), 1.0, nb)), "eta": rng.uniform(2.0, 5.0, nb),
               "x1": rng.normal(0, 1, nb), "label": rng.integers(0, 2, nb).astype(np.int32),
               "true_prob": np.full(nb, 0.5), "y1": rng.normal(2.0, 0.5, nb), "y2": rng.exponential(2.0, nb),
               "sw": np.tile([1.0, -1.0], nb // 2)}
        cols = {k: np.concatenate([v, bkg[k]]) for k, v in cols.items()}
        order = rng.permutation(len(cols["p"]))
        cols = {k: v[order] for k, v in cols.items()}
    return {k: (v.astype(np.float32) if v.dtype == np.float64 and k != "sw" else v) for k, v in cols.items()}


def write_synthetic(root: str | Path, sample: str = "synth", n: int = 6000, seed: int = 1,
                    background: float = 0.0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(root) / "results" / "prepared" / sample
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        cols = synthetic_frame(int(n * frac), rng, background)
        pq.write_table(pa.table(cols), out / f"{split}.parquet")
    return out


def synth_oracle(df) -> np.ndarray:
    """The true P(label = 1) of the synthetic sample."""
    return df["true_prob"].to_numpy(np.float64)


register_oracle("synth", synth_oracle)


def write_tracking_sample(root: str | Path, n: int = 30000, seed: int = 11, sample: str = "tracking") -> Path:
    """A prepared tracking sample from the reference detector simulation (split 60/20/20 by event)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flashsim.detsim import tracking

    chunks = list(tracking.chunks(n, max(n, 1000), rng_factory(seed, sample), {}))
    cols = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    u = np.random.default_rng(seed).random(int(cols["evtNumber"].max()) + 1)[cols["evtNumber"]]
    out = Path(root) / "results" / "prepared" / sample
    out.mkdir(parents=True, exist_ok=True)
    for split, m in (("train", u < 0.6), ("val", (u >= 0.6) & (u < 0.8)), ("test", u >= 0.8)):
        pq.write_table(pa.table({k: v[m] for k, v in cols.items()}), out / f"{split}.parquet")
    return out


def repo_models(names: list[str], **overrides) -> dict:
    """The repository's params.yaml entries of ``names`` (``overrides``: name -> dict merged into the entry)."""
    params = yaml.safe_load((SCHEMA_DIR.parent / "params.yaml").read_text())
    return {n: {**params["models"][n], **overrides.get(n, {})} for n in names}


def write_prepared_calib(root: str | Path, sample: str, channel: str, n: int, seed: int = 1,
                         chunk_size: int = 250_000) -> Path:
    """Generate a calibration sample with the reference simulation straight into
    ``results/prepared/<sample>/{train,val,test}.parquet`` (60/20/20 by event)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flashsim.detsim import calib

    parts = list(calib.chunks(n, chunk_size, rng_factory(seed, sample), {"channel": channel}))
    cols = {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}
    h = cols["evtNumber"].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # deterministic per event
    u = (h >> np.uint64(11)).astype(np.float64) / 2.0**53
    out = Path(root) / "results" / "prepared" / sample
    out.mkdir(parents=True, exist_ok=True)
    for split, sel in (("train", u < 0.6), ("val", (u >= 0.6) & (u < 0.8)), ("test", u >= 0.8)):
        pq.write_table(pa.table({k: v[sel] for k, v in cols.items()}), out / f"{split}.parquet")
    return out


def workflow_copy(dest: str | Path) -> Path:
    """The workflow files of this checkout in ``dest`` (src and the ``gpu`` profile link linked, not copied): a
    workflow run or dry run there neither depends on nor changes the state of the checkout (``make demo``)."""
    import shutil

    root, dest = SCHEMA_DIR.parent, Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "params.yaml"):
        shutil.copy2(root / name, dest / name)
    for name in ("rules", "schemas", "profiles", "envs"):
        shutil.copytree(root / name, dest / name, symlinks=True)
    (dest / "src").symlink_to(root / "src")
    (dest / "gpu").symlink_to("profiles/gpu")
    return dest
