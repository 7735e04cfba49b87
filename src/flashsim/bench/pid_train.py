"""Benchmark ``pid_train``: PID training on the device (GPU when present): rows/s per model and the RICH model's
time to its full-scale gate.

- Time to gate: the RICH generator of one species (``FLASHSIM_BENCH_SPECIES``, default K) on ``rows`` sWeighted
  calibration candidates (signal and background, 1e6 at full), full-scale hyperparameters, regressed sWeights as in
  ``flashsim train``; the sWeighted two-sample AUC on a FIXED held-out sample (1e5) is evaluated every
  ``eval_seconds`` of training and the clock stops at the gate (params ``pid_rich`` full gate, 0.60). Same
  definition and loop as the tracking generators (:func:`flashsim.bench.tracking.train_to_gate`), with the same two
  references beside it on the same held-out rows: kNN(20) resampling of training outputs in condition space and a
  condition-blind generator (training outputs at random), both drawn with the training weights.
- Throughput: training rows/s of each PID model's step (isMuon classifier, RICH, MUON, GlobalPID generators) at the
  full-scale widths and batch sizes, on device-resident data.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

HELP = "PID training: rows/s per model, RICH time-to-gate on 1e6 sWeighted rows with kNN/condition-blind references"
log = logging.getLogger(__name__)


def _calib_frame(params: dict, species: str, n: int, seed: int):
    import pandas as pd

    from flashsim.detsim import calib
    from flashsim.models.pid import common as pc
    from flashsim.seeding import rng_factory

    sample = f"calib_{species}"
    channel = params["detsim"]["samples"][sample]["channel"]
    parts = [pd.DataFrame(c) for c in calib.chunks(n, 250_000, rng_factory(seed, f"bench_{sample}"),
                                                   {"channel": channel})]
    return pc.derive(pd.concat(parts, ignore_index=True))


def _weighted_pick(idx: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``idx`` [n, k], drawn with probability proportional to ``w[idx]``."""
    p = w[idx] + 1e-12
    c = np.cumsum(p, axis=1)
    u = rng.random(len(idx)) * c[:, -1]
    return idx[np.arange(len(idx)), (c < u[:, None]).sum(1).clip(max=idx.shape[1] - 1)]


def references(c_train: np.ndarray, y_train: np.ndarray, w_train: np.ndarray, c_test: np.ndarray,
               seed: int, device: torch.device, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(kNN(k) resample, condition-blind sample) of training outputs for the held-out conditions, weighted."""
    rng = np.random.default_rng(seed)
    ct, cs = torch.as_tensor(c_train, device=device), torch.as_tensor(c_test, device=device)
    picks = []
    for i in range(0, len(cs), 4096):
        picks.append(torch.cdist(cs[i:i + 4096], ct).topk(k, largest=False).indices.cpu().numpy())
    knn = y_train[_weighted_pick(np.concatenate(picks), w_train, rng)]
    blind = y_train[rng.choice(len(y_train), len(c_test), p=w_train / w_train.sum())]
    return knn, blind


def time_to_gate(params: dict, quick: bool, device: torch.device, seed: int, n_jobs: int) -> dict:
    from flashsim.bench.tracking import train_to_gate
    from flashsim.models import get_family, get_spec
    from flashsim.models.pid import common as pc
    from flashsim.preprocessing import QuantileTransform
    from flashsim.validation import two_sample_auc

    species = os.environ.get("FLASHSIM_BENCH_SPECIES", "K")
    fam = get_family(get_spec(f"pid_rich_{species}", {**params, "scale": "full"}))
    rows, held_out = (20_000, 5_000) if quick else (1_000_000, 100_000)
    gate = 0.75 if quick else fam.spec.gates.get("two_sample_auc", {}).get("max", 0.6)
    max_seconds = float(os.environ.get("FLASHSIM_BENCH_MAX_SECONDS", 40.0 if quick else 12 * 60.0))
    eval_seconds = 10.0 if quick else 60.0
    t0 = time.perf_counter()
    df = _calib_frame(params, species, rows + held_out, seed)
    tr, te = df.iloc[:rows], df.iloc[rows:]
    x, y = fam.features(tr), fam.targets_core(tr)
    w = pc.training_weights(fam, tr, [x, y])
    qx = QuantileTransform.fit(x, w, fam.cfg["n_knots"])
    qy = QuantileTransform.fit(y, w, fam.cfg["n_knots"], atoms=fam.cfg["atoms"])
    x_te, w_te = fam.features(te), fam.weights(te)
    # the gate compares physical outputs: generate differences, add back like the exported graph does
    pairs = fam.difference_pairs()

    class _Q:  # inverse transform + the difference post-processing, for train_to_gate's evaluate()
        @staticmethod
        def inverse_transform(t):
            out = qy.inverse_transform(t)
            for i, j in pairs:
                out[:, i] = out[:, i] + out[:, j]
            return out

    data = {"qx": qx, "qy": _Q, "c": qx.transform(x).astype(np.float32),
            "y": qy.transform(y, np.random.default_rng(seed + 11)).astype(np.float32), "w": w,
            "c_test": qx.transform(x_te).astype(np.float32), "x_test": x_te, "y_test_phys": fam.targets(te),
            "w_test": w_te}
    prep_s = time.perf_counter() - t0
    cfg = dict(fam.cfg)
    if quick:
        cfg.update(width=64, batch_size=1024)
    methods = {}
    for method in os.environ.get("FLASHSIM_BENCH_METHODS", fam.cfg["method"]).split(","):
        methods[method] = train_to_gate(method, cfg, data, gate=gate, max_seconds=max_seconds,
                                        eval_seconds=eval_seconds, device=device, seed=seed, n_jobs=n_jobs)
    y_tr_phys = fam.targets(tr)
    knn, blind = references(data["c"], y_tr_phys, w, data["c_test"], seed, device)
    refs = {"knn20_auc": two_sample_auc(data["y_test_phys"], knn, w_te, w_te, conditions=x_te, seed=seed,
                                        n_jobs=n_jobs),
            "condition_blind_auc": two_sample_auc(data["y_test_phys"], blind, w_te, w_te, conditions=x_te,
                                                  seed=seed, n_jobs=n_jobs)}
    return {"model": fam.spec.name, "species": species, "rows": rows, "held_out": held_out, "gate": gate,
            "prepare_seconds": prep_s, "signal_fraction": float(tr["is_signal"].mean()), "methods": methods,
            "references": refs}


def _step_throughput(kind: str, n_cond: int, n_out: int, cfg: dict, device: torch.device, seconds: float) -> dict:
    """Training rows/s of one model's optimisation step on device-resident random batches."""
    import torch.nn.functional as F

    from flashsim.models import generative as G
    from flashsim.models.nets import MLP

    bs = int(cfg["batch_size"])
    c = torch.randn(bs * 8, n_cond, device=device)
    w = torch.ones(bs * 8, device=device)
    if kind == "classifier":
        net = MLP(n_cond, 2, cfg["width"], cfg["depth"], cfg.get("activation", "silu"), True).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        lab = torch.randint(0, 2, (bs * 8,), device=device)

        def step(i):
            sl = slice((i % 8) * bs, (i % 8 + 1) * bs)
            loss = (F.cross_entropy(net(c[sl]), lab[sl], reduction="none") * w[sl]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        trainer = G.Trainer(cfg["method"], n_cond, n_out, {**G.DEFAULTS, **cfg}, device, 0)
        y = torch.randn(bs * 8, n_out, device=device)

        def step(i):
            sl = slice((i % 8) * bs, (i % 8 + 1) * bs)
            if cfg["method"] == "flow":
                trainer.flow_step(c[sl], y[sl], w[sl])
            else:
                trainer.gan_step(c[sl], y[sl], w[sl], train_gen=i % int(cfg["n_critic"]) == 0)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(5):
        step(i)
    sync()
    t0, i = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step(i)
        i += 1
        if i % 20 == 0:
            sync()
    sync()
    dt = time.perf_counter() - t0
    return {"batch_size": bs, "steps": i, "seconds": dt, "rows_per_s": i * bs / dt}


def throughput(params: dict, quick: bool, device: torch.device) -> dict:
    from flashsim.models import get_family, get_spec

    species = os.environ.get("FLASHSIM_BENCH_SPECIES", "K")
    out = {}
    for model in ("ismuon", "rich", "muon", "global"):
        fam = get_family(get_spec(f"pid_{model}_{species}", {**params, "scale": "full"}))
        cfg = dict(fam.cfg)
        if quick:
            cfg.update(width=min(cfg["width"], 64), batch_size=min(cfg["batch_size"], 512))
        n_out = 2 if fam.task == "classifier" else len(fam.output_names_core())
        out[fam.spec.name] = {"task": fam.task, "method": cfg.get("method"), "width": cfg["width"],
                              "depth": cfg["depth"], **_step_throughput(fam.task, len(fam.feature_names), n_out,
                                                                       cfg, device, 1.0 if quick else 10.0)}
    return out


def run(quick: bool, params: dict) -> dict:
    from flashsim.threads import usable_cores
    from flashsim.training import choose_device, seed_everything

    device = choose_device()
    seed = int(params["seed"])
    seed_everything(seed)
    n_jobs = usable_cores()
    res = {"device": str(device), "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
           "throughput": throughput(params, quick, device)}
    res["time_to_gate"] = time_to_gate(params, quick, device, seed, n_jobs)
    return res


def summary(r: dict) -> str:
    lines = [f"pid_train on {r['device']}"]
    for name, t in r["throughput"].items():
        lines.append(f"  {name}: {t['rows_per_s']:.3g} rows/s (batch {t['batch_size']})")
    g = r["time_to_gate"]
    for m, x in g["methods"].items():
        auc = x["auc_history"][-1]["auc"] if x["auc_history"] else float("nan")
        reached = f"reached in {x['time_to_gate_s']:.0f} s" if x["reached"] else "NOT reached"
        lines.append(f"  {g['model']} {m}: AUC {auc:.3f} after {x['train_seconds']:.0f} s on {g['rows']} rows; gate "
                     f"{g['gate']} {reached}")
    lines.append(f"  references: kNN(20) {g['references']['knn20_auc']:.3f}, condition-blind "
                 f"{g['references']['condition_blind_auc']:.3f}")
    return "\n".join(lines)
