"""``flashsim cabi NAME``: build the C-ABI shared object of an exported model and gate its parity with ONNX."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from flashsim.detector import RECONSTRUCTED_TYPES
from flashsim.errors import ConfigError, GateError

HELP = ("compile models/NAME.onnx into a per-particle C shared object with SQLamarr's Plugin (float* f(float*, "
        "const float*)) or, for generators, GenerativePlugin (+ const float* random) entry point")
log = logging.getLogger(__name__)


def parity_inputs(ref, n: int, seed: int) -> np.ndarray:
    """``x`` rows for a parity check: the model's training data when the card's files hold its features, else
    the features computed on particle-gun particles (standard normal where not derivable)."""
    import torch

    from flashsim.runtime import toys

    files = [Path(f) for f in (ref.card.get("training_data") or {}).get("files", [])]
    if files and all(f.suffix == ".parquet" and f.exists() for f in files):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(files[0], columns=ref.features)
        except (KeyError, ValueError, OSError):
            table = None  # derived features (not stored): fall back to the gun
        if table is not None and table.num_rows:
            x = np.stack([table[c].to_numpy(zero_copy_only=False).astype(np.float32) for c in ref.features], 1)
            x = x[np.all(np.isfinite(x), 1)]
            if len(x):
                return x[np.random.default_rng(seed).integers(0, len(x), n)]

    b = toys.gun_batch(n, seed)
    gen = torch.Generator().manual_seed(seed)
    b.set("type", torch.tensor(RECONSTRUCTED_TYPES, dtype=torch.int32)[torch.randint(0, 3, (n,), generator=gen)])
    cols = []
    for f in ref.features:
        try:
            cols.append(b.f32(f))
        except KeyError:
            cols.append(torch.randn(n, generator=gen))
    return torch.stack(cols, 1).numpy()


def build_checked(name: str, models: str | Path = "models", output: str | Path | None = None, *,
                  rows: int = 5_000, seed: int = 1, tolerance: float = 1e-4, max_tolerance: float = 1e-2) -> dict:
    """Build ``<models>/<name>.so`` (+ ``.so.json`` with the route and the parity vs onnxruntime).

    Gate, per output column relative to its scale: the 99.9% quantile of |C - ONNX| <= ``tolerance`` and the
    maximum <= ``max_tolerance``. Both evaluate float32 arithmetic in different orders (ONNX Runtime's MLAS
    kernels vs plain loops); deep chained generators (a PID pipeline: four networks, ODE steps) amplify those
    last-bit differences in a few rows, while a wrong weight or layout is off everywhere.
    """
    from flashsim.io.atomic import write_json
    from flashsim.runtime import cabi
    from flashsim.runtime.models import resolve

    ref = resolve(name, models)
    output = Path(output) if output else Path(models) / f"{name}.so"
    work = Path("results/cabi") / name
    art = cabi.build(ref.onnx, output, name=name, workdir=work)
    rng = np.random.default_rng(seed)
    data = cabi.parity_rows(ref.onnx, art.inputs, rows, rng, x=parity_inputs(ref, rows, seed))
    par = cabi.parity(art, ref.onnx, data)
    meta = {**art.to_dict(), "model": name, "onnx": str(ref.onnx), "features": ref.features, "noise": ref.noise,
            "outputs": ref.outputs, "parity": par, "tolerance": {"p999_scaled": tolerance, "max_scaled": max_tolerance},
            "sqlamarr": {"plugin": art.plugin, "function": art.symbol, "n_random": art.n_random}}
    if not (par["p999_scaled"] <= tolerance and par["max_scaled"] <= max_tolerance) or par["nan_mismatch"]:
        output.unlink(missing_ok=True)
        raise GateError(f"{name}: C artifact deviates from onnxruntime: |diff| / output scale: 99.9% quantile "
                        f"{par['p999_scaled']:.3g} (gate {tolerance:g}), max {par['max_scaled']:.3g} (gate "
                        f"{max_tolerance:g}), NaN mismatches {par['nan_mismatch']}")
    write_json(f"{output}.json", meta)
    log.info("%s: %s via %s, parity max |diff| %.3g (%.3g of scale) on %d rows", name, output, art.route,
             par["max_abs"], par["max_scaled"], par["rows"])
    return meta


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME", help="model name(s) in the models directory")
    p.add_argument("--models", default="models", help="directory with NAME.onnx and NAME.json")
    p.add_argument("--output", help="output .so (one NAME only; default MODELS/NAME.so)")
    p.add_argument("--rows", type=int, default=5_000, help="rows of the parity check")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="gate on the 99.9%% quantile of |C - ONNX| relative to each output's scale")
    p.add_argument("--max-tolerance", type=float, default=1e-2, help="gate on the maximum of the same")
    p.add_argument("--seed", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    if args.output and len(args.names) > 1:
        raise ConfigError("--output takes one model name")
    for name in args.names:
        build_checked(name, args.models, args.output, rows=args.rows, seed=args.seed, tolerance=args.tolerance,
                      max_tolerance=args.max_tolerance)
    if not args.output:
        try:
            write_sqlamarr_config(args.models)
        except ConfigError as err:  # the shared objects are fine; only the SQLamarr pipeline cannot be written
            log.warning("no SQLamarr pipeline written: %s", err)
    return 0


def write_sqlamarr_config(models: str | Path) -> Path:
    """``<models>/sqlamarr_pipeline.json``: the chain over the shared objects built so far (absent stages left
    out, and named in the log)."""
    from flashsim.runtime import sqlamarr
    from flashsim.runtime.chain import ChainSpec
    from flashsim.runtime.simulate import Settings

    spec = ChainSpec(pid={s: f"pid_pipeline_{s}" for s in Settings().species})
    path = sqlamarr.write_config(models, spec, skip=tuple(spec.names()))
    absent = [n for n in spec.names() if sqlamarr.model_card(Path(models), n) is None]
    log.info("SQLamarr pipeline -> %s%s", path, f" (without {', '.join(absent)})" if absent else "")
    return path
