"""Benchmark ``tracking``: resolution-model training to its gate, side by side per generative method, and
inference throughput of the four tracking models.

Training (GPU when present, else CPU): the resolution generator on ``rows`` reconstructed tracks of the reference
detector simulation, data resident on the device, evaluated every ``eval_seconds`` of training on a FIXED held-out
sample (two-sample AUC is only comparable at a fixed size); the clock stops when the AUC reaches the gate
(full: 1e6 rows, 1e5 held out, AUC <= 0.60). Reported beside it, measured in the same run on the same held-out
rows: resampling training outputs from the 20 nearest neighbours in (quantile-transformed) condition space, and a
condition-blind generator (training outputs drawn at random). Each method (``flow``, ``gan``) gets the same budget
(``FLASHSIM_BENCH_TRACKING_MAX_S`` seconds of training, default 600; ``FLASHSIM_BENCH_TRACKING_METHODS``).
When the flow reaches the gate and the resolution entry has ``steps`` > 0, its few-step student is distilled as
``flashsim train`` does (``few_step``: distillation seconds, the student's AUC on the same held-out rows, time
to the gate including the distillation).

Inference: particles/s of ``models/{acceptance,efficiency,resolution,covariance}.onnx`` through ONNX Runtime on
one core (one thread, batches of 1e5), and of ``models/acceptance.so`` (tl2cgen) when built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import numpy as np
import torch

from flashsim.bench import one_core, throughput

HELP = "tracking: resolution training time-to-gate (flow vs GAN, kNN and condition-blind references), inference/s"
log = logging.getLogger(__name__)


class _GateReached(Exception):
    pass


def _sample(n: int, seed: int):
    """Reconstructed tracks (type > 0) of the reference simulation, as a derived pandas frame."""
    import pandas as pd

    from flashsim.detsim import tracking
    from flashsim.models.tracking import derive
    from flashsim.seeding import rng_factory

    frames, have = [], 0
    rng_for = rng_factory(seed, "bench_tracking")
    for chunk in tracking.chunks(int(n * 1.25) + 1000, 250_000, rng_for, {}):
        df = pd.DataFrame(chunk)
        df = df[df["type"] > 0]
        frames.append(df)
        have += len(df)
        if have >= n:
            break
    return derive(pd.concat(frames, ignore_index=True).iloc[:n])


def _knn_resample(c_train: torch.Tensor, y_train: np.ndarray, c_test: torch.Tensor, k: int, seed: int,
                  chunk: int = 4096) -> np.ndarray:
    """For each test row, the output of one of its k nearest training rows (Euclidean, transformed conditions)."""
    gen = torch.Generator().manual_seed(seed)
    pick = []
    for i in range(0, len(c_test), chunk):
        d = torch.cdist(c_test[i:i + chunk], c_train)
        idx = d.topk(k, largest=False).indices
        j = torch.randint(0, k, (len(idx),), generator=gen).to(idx.device)
        pick.append(idx[torch.arange(len(idx), device=idx.device), j].cpu())
    return y_train[torch.cat(pick).numpy()]


def train_to_gate(method: str, params: dict, data: dict, *, gate: float, max_seconds: float, eval_seconds: float,
                  device: torch.device, seed: int, n_jobs: int) -> dict:
    """Train one generative method until the held-out AUC <= gate or the time budget is spent.

    ``data``: ``c``/``y`` (transformed training conditions/targets), ``qy``, ``c_test``, ``x_test``,
    ``y_test_phys``; optional ``w`` (training weights) and ``w_test`` (held-out weights for a weighted AUC)."""
    from flashsim.models import generative as G
    from flashsim.training import DeviceData, normalised_weights
    from flashsim.validation import two_sample_auc

    cfg = {**G.DEFAULTS, **{k: v for k, v in params.items() if k in G.DEFAULTS}, "method": method,
           "epochs": 10_000}
    if method == "gan":
        cfg["lr"] = min(cfg["lr"], 5e-4)
    cfg["lr_schedule"] = "constant"
    qy = data["qy"]
    train = DeviceData(device, c=data["c"], y=data["y"], w=normalised_weights(data.get("w"), len(data["c"])))
    trainer = G.Trainer(method, data["c"].shape[1], data["y"].shape[1], cfg, device, seed)
    c_test = torch.as_tensor(data["c_test"], device=device)
    noise_gen = torch.Generator(device="cpu").manual_seed(seed + 5)
    state = {"train_s": 0.0, "last_eval": 0.0, "t0": time.perf_counter(), "epochs": 0, "history": []}

    def evaluate(core: torch.nn.Module | None = None) -> float:
        core = core if core is not None else trainer.final_core()
        with torch.no_grad():
            z = torch.randn(len(c_test), core.noise_dim, generator=noise_gen).to(device)
            y_t = torch.cat([core(c_test[i:i + 65536], z[i:i + 65536]) for i in range(0, len(c_test), 65536)])
        trainer.core.train()
        y = qy.inverse_transform(y_t.float().cpu().numpy())
        w = data.get("w_test")  # per-row weights of the held-out rows (sWeights), the same for both samples
        return two_sample_auc(data["y_test_phys"], y, w, w, conditions=data["x_test"], seed=seed, n_jobs=n_jobs)

    class GateWatch:
        """The training loop's metrics log (:class:`flashsim.training.MetricsLog`): times the epochs and checks the
        gate every ``eval_seconds`` of training; ends the loop when it is reached or the time is up."""

        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            state["train_s"] += metrics.get("epoch_seconds", 0.0)
            state["epochs"] += 1
            if state["train_s"] - state["last_eval"] >= eval_seconds or state["train_s"] >= max_seconds:
                state["last_eval"] = state["train_s"]
                auc = evaluate()
                state["history"].append({"train_seconds": state["train_s"], "epochs": state["epochs"], "auc": auc})
                log.info("%s: %.0f s, %d epochs, AUC %.4f", method, state["train_s"], state["epochs"], auc)
                if auc <= gate or state["train_s"] >= max_seconds:
                    raise _GateReached

    with contextlib.suppress(_GateReached):
        trainer.fit(train, None, GateWatch(), None, desc=f"bench {method}")
    reached = bool(state["history"]) and state["history"][-1]["auc"] <= gate
    steps = state["epochs"] * max(len(data["c"]) // int(cfg["batch_size"]), 1)
    few = None
    if method == "flow" and reached and int(cfg["steps"]) > 0:  # the few-step student of the params (steps)
        t1 = time.perf_counter()
        n_val = min(len(data["c"]), 20_000)  # early stopping on training conditions with fixed fresh noise
        val = DeviceData(device, c=data["c"][:n_val], w=np.ones(n_val, np.float32))
        student, dh = G.distill(trainer.final_core(), train, val, cfg, device, seed)
        if device.type == "cuda":
            torch.cuda.synchronize()
        distill_s = time.perf_counter() - t1
        auc = evaluate(student)
        few = {"steps": int(cfg["steps"]), "distill_epochs": int(cfg["distill_epochs"]), "distill_seconds": distill_s,
               "auc": auc, "teacher_auc": state["history"][-1]["auc"], "auc_delta": auc - state["history"][-1]["auc"],
               "reached": auc <= gate,
               "time_to_gate_s": state["history"][-1]["train_seconds"] + distill_s if auc <= gate else None,
               "distill_val_loss": min(h["distill.val_loss"] for h in dh)}
    return {"method": method, "config": {k: cfg[k] for k in ("width", "depth", "batch_size", "lr", "ode_steps",
                                                              "n_critic", "noise_dim")},
            "gate": gate, "reached": reached,
            "time_to_gate_s": state["history"][-1]["train_seconds"] if reached else None,
            "train_seconds": state["train_s"], "epochs": state["epochs"],
            "rows_per_s": len(data["c"]) * state["epochs"] / max(state["train_s"], 1e-9),
            "steps_per_s": steps / max(state["train_s"], 1e-9), "auc_history": state["history"], "few_step": few}


def inference(params: dict, quick: bool) -> dict:
    """ONNX Runtime one-core particles/s of the exported tracking models, and the tl2cgen acceptance."""
    from flashsim.config import repo_root
    from flashsim.export import ort_session
    from flashsim.models import get_family, get_spec

    out = {}
    df = _sample(20_000 if quick else 100_000, 99)
    n = len(df)
    for name in ("acceptance", "efficiency", "resolution", "covariance"):
        try:
            fam = get_family(get_spec(name, params))
        except Exception as err:  # not configured
            out[name] = {"skipped": str(err)}
            continue
        path = fam.spec.onnx_path
        if not path.exists():
            out[name] = {"skipped": f"{path} not exported"}
            continue
        x = np.ascontiguousarray(fam.features(df), dtype=np.float32)
        feed = {"x": x}
        sess = ort_session(path, threads=1)
        if any(i.name == "noise" for i in sess.get_inputs()):
            feed["noise"] = np.random.default_rng(0).standard_normal((n, fam.noise_dim)).astype(np.float32)
        with one_core():
            out[name] = {"onnxruntime_1core": throughput(lambda s=sess, f=feed: s.run(["y"], f), n,
                                                         0.3 if quick else 2.0)}
        so = repo_root() / "models" / f"{name}.so"
        if name == "acceptance" and so.exists():
            from flashsim.runtime import cabi

            cm = cabi.CModel(so, cabi.symbol_for(name))
            with one_core():
                out[name]["tl2cgen_1core"] = throughput(lambda c=cm, x=x: c(x), n, 0.3 if quick else 2.0)
    return out


def run(quick: bool, params: dict) -> dict:
    from flashsim.models import get_family, get_spec
    from flashsim.preprocessing import QuantileTransform
    from flashsim.threads import usable_cores
    from flashsim.training import choose_device, seed_everything, set_threads
    from flashsim.validation import two_sample_auc

    device = choose_device()
    if device.type == "cpu":
        set_threads(1 if quick else None)
    seed = int(params["seed"])
    seed_everything(seed)
    fam = get_family(get_spec("resolution", {**params, "scale": "full"}))
    rows, held_out = (20_000, 5_000) if quick else (1_000_000, 100_000)
    gate = fam.spec.gates.get("two_sample_auc", {}).get("max", 0.6) if not quick else 0.75
    # per-method training budget and methods: FLASHSIM_BENCH_TRACKING_MAX_S, FLASHSIM_BENCH_TRACKING_METHODS
    max_seconds = float(os.environ.get("FLASHSIM_BENCH_TRACKING_MAX_S", 40.0 if quick else 600.0))
    methods = os.environ.get("FLASHSIM_BENCH_TRACKING_METHODS", "flow,gan").split(",")
    eval_seconds = 10.0 if quick else 60.0
    n_jobs = usable_cores()
    t0 = time.perf_counter()
    df = _sample(rows + held_out, seed)
    tr, te = df.iloc[:rows], df.iloc[rows:]
    x, y = fam.features(tr), fam.targets_core(tr)
    qx = QuantileTransform.fit(x, None, fam.cfg["n_knots"])
    qy = QuantileTransform.fit(y, None, fam.cfg["n_knots"], atoms=fam.cfg["atoms"],
                               max_discrete=fam.cfg["max_discrete"])
    spread = np.random.default_rng(seed + 11)
    x_te, y_te = fam.features(te), fam.targets_core(te)
    data = {"qx": qx, "qy": qy, "c": qx.transform(x).astype(np.float32),
            "y": qy.transform(y, spread).astype(np.float32),
            "c_test": qx.transform(x_te).astype(np.float32), "x_test": x_te, "y_test_phys": y_te}
    prep_s = time.perf_counter() - t0
    cfg = dict(fam.cfg)
    if quick:
        cfg.update(width=64, batch_size=1024)
    results = {"device": str(device), "rows": rows, "held_out": held_out, "prepare_seconds": prep_s,
               "methods": {}}
    for method in methods:
        results["methods"][method] = train_to_gate(method, cfg, data, gate=gate, max_seconds=max_seconds,
                                                   eval_seconds=eval_seconds, device=device, seed=seed,
                                                   n_jobs=n_jobs)
    # references on the same held-out rows
    c_train = torch.as_tensor(data["c"], device=device)
    c_test = torch.as_tensor(data["c_test"], device=device)
    knn = _knn_resample(c_train, y, c_test, 20, seed)
    blind = y[np.random.default_rng(seed).integers(0, len(y), len(y_te))]
    results["references"] = {
        "knn20_auc": two_sample_auc(y_te, knn, conditions=x_te, seed=seed, n_jobs=n_jobs),
        "condition_blind_auc": two_sample_auc(y_te, blind, conditions=x_te, seed=seed, n_jobs=n_jobs),
    }
    done = [m for m in results["methods"].values() if m["reached"]]
    results["best_method"] = min(done, key=lambda m: m["time_to_gate_s"])["method"] if done else None
    results["inference"] = inference(params, quick)
    return results


def summary(result: dict) -> str:
    lines = [f"tracking bench on {result['device']}: {result['rows']} rows, held out {result['held_out']}"]
    for m, r in result["methods"].items():
        auc = r["auc_history"][-1]["auc"] if r["auc_history"] else float("nan")
        lines.append(f"  {m}: AUC {auc:.3f} after {r['train_seconds']:.0f} s ({r['epochs']} epochs, "
                     f"{r['rows_per_s']:.3g} rows/s); gate {r['gate']} {'reached' if r['reached'] else 'NOT reached'}")
        if r.get("few_step"):
            f = r["few_step"]
            lines.append(f"  {m} -> {f['steps']}-call student: AUC {f['auc']:.3f} (teacher {f['teacher_auc']:.3f}) "
                         f"after {f['distill_seconds']:.0f} s of distillation; time to gate incl. distillation "
                         f"{f['time_to_gate_s'] if f['time_to_gate_s'] is None else round(f['time_to_gate_s'])} s")
    ref = result["references"]
    lines.append(f"  references: kNN(20) {ref['knn20_auc']:.3f}, condition-blind {ref['condition_blind_auc']:.3f}")
    for name, r in result.get("inference", {}).items():
        if "onnxruntime_1core" in r:
            extra = f", tl2cgen {r['tl2cgen_1core']['items_per_s']:.3g}/s" if "tl2cgen_1core" in r else ""
            lines.append(f"  {name}: ORT 1 core {r['onnxruntime_1core']['items_per_s']:.3g}/s{extra}")
    return "\n".join(lines)
