"""``flashsim promote NAME VERSION``: give a validated registered version the ``production`` alias."""

from __future__ import annotations

import argparse

HELP = "set the MLflow registry alias 'production' on a validated model version"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="registered model name (e.g. acceptance)")
    parser.add_argument("version", help="model version number")
    parser.add_argument("--force", action="store_true", help="promote even if its validation gates did not pass")


def run(args: argparse.Namespace) -> int:
    from flashsim.mlops import model_registry

    store = model_registry.registry_store()
    mv = model_registry.promote(store, args.name, args.version, force=args.force)
    aliases = model_registry.aliases(store, mv.name).get(str(mv.version), [])
    print(f"{mv.name} version {mv.version} -> production (aliases now: {', '.join(aliases)}; "
          f"gates {mv.tags.get('gates', 'unknown')}; store {store.uri})")
    return 0
