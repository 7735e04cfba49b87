"""A long command for the kill tests, run through the real ``flashsim`` entry point (signal handlers, exit codes):

    python tests/kill_job.py PROJECT_DIR MODEL SECONDS

It holds the model's output-folder lock, starts the model's MLflow run (local store of PROJECT_DIR), logs a metric,
opens an atomic output ``models/MODEL.onnx`` (partial bytes written), prints READY and sleeps SECONDS; then it
writes the output and ends. SIGTERM/SIGINT at READY must leave no temporary file and end the run KILLED.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HELP = "test job: lock, MLflow run, atomic output, sleep"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root")
    p.add_argument("model")
    p.add_argument("seconds", type=float)


def run(args: argparse.Namespace) -> int:
    from flashsim.io.atomic import atomic_output, folder_lock
    from flashsim.mlops import runs

    root = Path(args.root)
    out = root / "models" / f"{args.model}.onnx"
    with folder_lock(root / "results" / "train" / args.model, f"training of {args.model}"), \
            runs.start_job("train", args.model, params={"seconds": args.seconds}, root=root) as job, \
            atomic_output(out) as tmp:
        job.log_metrics({"loss": 1.0}, step=0)
        job.flush()
        tmp.write_bytes(b"partial")
        print(f"READY {job.run_id}", flush=True)
        time.sleep(args.seconds)
        tmp.write_bytes(b"complete")
    return 0


if __name__ == "__main__":
    from flashsim import cli

    cli.COMMANDS["killjob"] = "kill_job"
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(cli.main(["killjob", *sys.argv[1:]]))
