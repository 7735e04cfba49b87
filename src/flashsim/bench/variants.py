"""Generator variants of the deployed chain models, for the runtime benchmark (same conditions, noise, outputs):

- ``flow8``: the ``ode_steps`` flow teachers (8 midpoint steps = 16 network calls) of few-step models
  (``steps`` > 0); models that are already teachers are written unchanged;
- ``gan1``: one-pass GAN generators of the same widths and depths (Lamarr's deployed kind; a GlobalPID generator
  as one joint network), with the trained quantile transforms and an UNTRAINED core (random weights, seed 0):
  for timing only, their outputs are not physics.

Each variant is a models directory (``NAME.onnx`` + ``NAME.json``) that :func:`flashsim.runtime.models.available`
and the scikinC baseline read like ``models/``; non-generator models (trees, classifiers) are copied.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

VARIANTS = ("flow8", "gan1")
GENERATOR_FAMILIES = ("generator", "covariance", "pid_generator")


def _write(fam, module: torch.nn.Module, card: dict, out: Path, variant: str) -> None:
    fam.module = module.eval()
    fam.to_onnx(out / f"{fam.spec.name}.onnx")
    card = copy.deepcopy(card)
    card["bench_variant"] = {"variant": variant, "untrained": variant == "gan1"}
    (out / f"{fam.spec.name}.json").write_text(json.dumps(card, indent=1))


def write_variant(variant: str, params: dict, models_dir: Path, names: list[str], out: Path) -> dict[str, str]:
    """Write ``variant`` of the chain models ``names`` (and their PID stages) from ``models_dir`` into ``out``;
    returns name -> what was written (``copied``, ``teacher``, ``as deployed``, ``gan (untrained)``,
    ``pipeline``)."""
    from flashsim.models import get_family, get_spec

    out.mkdir(parents=True, exist_ok=True)
    cards = {n: json.loads((models_dir / f"{n}.json").read_text()) for n in names
             if (models_dir / f"{n}.json").exists()}
    stages = {n: ((c.get("params") or {}).get("model") or {}).get("stages") or {} for n, c in cards.items()}
    for st in stages.values():
        for s in st.values():
            if s not in cards:
                cards[s] = json.loads((models_dir / f"{s}.json").read_text())
    done: dict[str, str] = {}
    fams = {}
    for name, card in cards.items():
        if stages.get(name):
            continue
        spec = get_spec(name, params)
        if spec.family not in GENERATOR_FAMILIES:
            for ext in ("onnx", "json"):
                shutil.copyfile(models_dir / f"{name}.{ext}", out / f"{name}.{ext}")
            done[name] = "copied"
            continue
        fam = get_family(spec)
        fam.load()
        if variant == "flow8":
            module, what = (fam.teacher_module, "teacher") if fam.few_step else (fam.module, "as deployed")
        else:
            module, what = fam.gan_twin(), "gan (untrained)"
        _write(fam, module, card, out, variant)
        fams[name], done[name] = fam, what
    for name, st in stages.items():
        if not st:
            continue
        pipe = get_family(get_spec(name, params))
        for key, stage in st.items():
            if stage in fams:
                pipe.use_stage(key, fams[stage])
        pipe.load()
        _write(pipe, pipe.module, cards[name], out, variant)
        done[name] = "pipeline"
    return done
