"""`flashsim validate NAME`: the generic validate driver (see flashsim.drivers)."""

from __future__ import annotations

import argparse

from flashsim import drivers

HELP = {"train": "train a model from params.yaml models: (checkpointed, resumable)",
        "export": "export a trained model to models/NAME.onnx + model card, with the parity check",
        "validate": "validate an exported model: metrics, plots, HTML report, gates"}["validate"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    drivers.add_model_argument(p)
    p.add_argument("--no-gates", action="store_true", help="write the report but do not fail on gates")


def run(args: argparse.Namespace) -> int:
    out = drivers.validate_model(drivers.family_for(args), enforce_gates=not args.no_gates)
    print(f"{out['model']}: gates {'passed' if out['passed'] else 'FAILED'}")
    return 0
