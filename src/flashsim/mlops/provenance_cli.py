"""``flashsim provenance NAME@ALIAS``: what produced a registered model version, enough to rebuild it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "print git sha, data hashes, params and metrics of a registered model version (NAME@ALIAS, NAME/VERSION)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", metavar="NAME@ALIAS", help="e.g. acceptance@production, acceptance/3")
    parser.add_argument("--json", action="store_true", help="everything as JSON (incl. the full config)")
    parser.add_argument("--restore", type=Path, metavar="DIR",
                        help="write params.yaml (the effective config) and git.patch (if dirty) into DIR")


def render(info: dict[str, Any]) -> str:
    git = info["git"]
    train = info.get("provenance", {}).get("train", {})
    lines = [f"{info['model']} version {info['version']}  aliases: {', '.join(info['aliases']) or '-'}  "
             f"gates: {info['gates'] or '-'}",
             f"  run            {info['run_id']}  ({info['tracking_uri']})",
             f"  onnx sha256    {info['onnx_sha256']}",
             f"  git            {git['sha']}{' (dirty: patch recorded)' if git['dirty'] else ''}"]
    for job, g in git["jobs"].items():
        lines.append(f"    {job:<12} {g['sha']}{' dirty' if g['dirty'] else ''}")
    lines.append("  data sha256")
    lines += [f"    {label:<12} {d['sha256']}  {d['path']}" for label, d in info["data"].items()]
    lines.append("  params")
    lines += [f"    {k} = {v}" for k, v in info["params"].items()]
    lines.append("  validation metrics")
    lines += [f"    {k.removeprefix('validation.')} = {v:.6g}" for k, v in info["metrics"].items()]
    env = train.get("environment", {})
    if env:
        lines.append("  environment    " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "platform"))
    lines.append("  rebuild        git checkout {sha}{patch}; flashsim provenance {ref} --restore . ; "
                 "snakemake --cores all models/{model}.onnx  (then compare the onnx sha256)".format(
                     sha=git["sha"][:12], patch="; git apply git.patch" if git["dirty"] else "",
                     ref=f"{info['model']}/{info['version']}", model=info["model"]))
    return "\n".join(lines)


def restore(info: dict[str, Any], directory: Path) -> list[Path]:
    """Write the recorded effective config (and git patch) of the train job into ``directory``."""
    import yaml

    from flashsim.errors import ConfigError
    from flashsim.io.atomic import write_text

    train = info.get("provenance", {}).get("train", {})
    if "config" not in train:
        raise ConfigError(f"{info['model']}/{info['version']}: the run has no recorded params.yaml")
    written = [directory / "params.yaml"]
    write_text(written[0], yaml.safe_dump(train["config"], sort_keys=False))
    if train.get("git_patch"):
        written.append(directory / "git.patch")
        write_text(written[1], train["git_patch"])
    return written


def run(args: argparse.Namespace) -> int:
    from flashsim.mlops import model_registry

    info = model_registry.provenance(model_registry.registry_store(), args.ref)
    if args.restore is not None:
        for path in restore(info, args.restore):
            print(f"wrote {path}")
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    elif args.restore is None:
        print(render(info))
    return 0
