"""The ``flashsim`` command: one entry point, one subcommand per module.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily so that ``flashsim --help`` stays fast and torch loads only when needed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from flashsim import __version__, retry
from flashsim.errors import FlashsimError
from flashsim.io.atomic import Terminated, install_signal_handlers, restore_signal_handlers
from flashsim.mlops.provenance import install_log_redaction, redact

EPILOG = """exit codes:
  0    success
  1    unexpected error (a bug: please report it with the traceback)
  2    bad input or configuration (the message names the file, branch or config key)
  3    a validation gate failed (see reports/NAME/index.html)
  130  interrupted (Ctrl-C)
"""

# subcommand -> module; adding a subcommand is one line here plus its module.
COMMANDS: dict[str, str] = {
    "generate": "flashsim.detsim.cli",
    "prepare": "flashsim.prepare",
    "contract": "flashsim.io.contract",
    "bench": "flashsim.bench",
    "install-profiles": "flashsim.cluster",
    "promote": "flashsim.mlops.promote",
    "compare": "flashsim.mlops.compare",
    "provenance": "flashsim.mlops.provenance_cli",
    "train": "flashsim.drivers.train",
    "export": "flashsim.drivers.export",
    "validate": "flashsim.drivers.validate",
    "summarize": "flashsim.mlops.summary",
    "simulate": "flashsim.runtime.simulate",
    "cabi": "flashsim.runtime.export_c",
    "sqlamarr": "flashsim.runtime.sqlamarr",
    "release": "flashsim.release",
    "ecal-report": "flashsim.validation.ecal_report",
    "physics-check": "flashsim.runtime.physics_check",
    "tune": "flashsim.tune.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashsim", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-V", "--version", action="version", version=f"flashsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modname in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help="")
            continue
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(run_verb=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    only = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(only).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    previous = install_signal_handlers()
    try:
        return _run(args, argv)
    finally:
        restore_signal_handlers(previous)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    if (done := retry.refused(argv)) is not None:  # a resubmitted attempt of a deterministic failure
        print(f"flashsim {args.command}: error: {done[1]} (not retried: this failure is deterministic, exit "
              f"{done[0]})", file=sys.stderr)
        return done[0]
    try:
        return int(args.run_verb(args) or 0)
    except FlashsimError as err:
        message = redact(str(err))
        print(f"flashsim {args.command}: error: {message}", file=sys.stderr)
        retry.record(argv, err.exit_code, message)
        return err.exit_code
    except Terminated as err:
        print(f"flashsim {args.command}: {err}; temporary files removed", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        return 130
