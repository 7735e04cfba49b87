"""`flashsim train NAME`: the generic train driver (see flashsim.drivers)."""

from __future__ import annotations

import argparse

from flashsim import drivers

HELP = {"train": "train a model from params.yaml models: (checkpointed, resumable)",
        "export": "export a trained model to models/NAME.onnx + model card, with the parity check",
        "validate": "validate an exported model: metrics, plots, HTML report, gates"}["train"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    drivers.add_model_argument(p)


def run(args: argparse.Namespace) -> int:
    drivers.train_model(drivers.family_for(args))
    return 0
