"""Batch-cluster support: install the Snakemake profiles for use by name, and inspect the workflow's rules.

``flashsim install-profiles`` links ``profiles/<name>`` of this checkout into Snakemake's user profile folder
(``$XDG_CONFIG_HOME/snakemake``, default ``~/.config/snakemake``), so that ``snakemake --profile gpu`` finds the
profile from any directory. In the repository root it works without this: Snakemake looks up a profile name in
the working directory first, where ``gpu`` links to ``profiles/gpu``.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from flashsim.config import repo_root
from flashsim.errors import ConfigError

HELP = "link the Snakemake profiles (profiles/gpu, ...) into ~/.config/snakemake so `--profile NAME` finds them"

WORKFLOW_PROFILE = "default"  # profiles/default is the workflow profile, found by Snakemake on its own


def user_profile_dir() -> Path:
    """Snakemake's per-user profile folder (appdirs' user config dir on Linux)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "snakemake"


def available_profiles(root: Path) -> list[str]:
    """Profile names under ``root/profiles`` that are meant to be chosen with ``--profile``."""
    folder = root / "profiles"
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != WORKFLOW_PROFILE
                  and (p / "config.yaml").exists())


def install_profiles(root: Path, dest: Path, names: list[str] | None = None, force: bool = False) -> list[Path]:
    """Symlink ``root/profiles/<name>`` to ``dest/<name>``; return the links. Refuses to replace anything that
    is not already a symlink (a user's own profile) and, without ``force``, a link pointing elsewhere."""
    known = available_profiles(root)
    names = names or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"no profile {', '.join(unknown)} in {root / 'profiles'} (have: {', '.join(known)})")
    dest.mkdir(parents=True, exist_ok=True)
    links = []
    for name in names:
        target = (root / "profiles" / name).resolve()
        link = dest / name
        if link.is_symlink():
            if link.resolve() != target:
                if not force:
                    raise ConfigError(f"{link} links to {os.readlink(link)}; use --force to point it at {target}")
                link.unlink()
        elif link.exists():
            raise ConfigError(f"{link} exists and is not a link; move it away to install the flashsim profile")
        if not link.is_symlink():
            tmp = link.with_name(f".{name}.flashsim-tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target, target_is_directory=True)
            tmp.rename(link)  # atomic: the profile is never half-installed
        links.append(link)
    return links


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="profiles to install (default: all but the workflow profile)")
    parser.add_argument("--dest", type=Path, default=None,
                        help="profile folder (default: $XDG_CONFIG_HOME/snakemake or ~/.config/snakemake)")
    parser.add_argument("--force", action="store_true", help="re-point links that lead to another checkout")


def run(args: argparse.Namespace) -> int:
    root = repo_root()
    if not (root / "profiles").is_dir():
        raise ConfigError(f"no profiles/ folder in {root}: run this in a flashsim checkout")
    dest = args.dest or user_profile_dir()
    for link in install_profiles(root, dest, args.names, args.force):
        print(f"{link} -> {link.resolve()}   (snakemake --profile {link.name})")
    return 0


# --- workflow introspection (used by the tests that keep profiles and envs in step with the rules) ----------

@dataclass
class RuleInfo:
    """What the cluster set-up needs to know about one rule."""

    name: str
    runs_command: bool  # False for pure target rules (input only), which never become jobs
    conda_env: str | None
    snakefile: str
    shellcmd: str | None = None


def workflow_rules(root: Path) -> list[RuleInfo]:
    """Load the workflow in ``root`` with Snakemake's API (no DAG, no execution) and describe its rules."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(), snakefile=root / "Snakefile", workdir=root)
        return [RuleInfo(r.name, not r.norun, None if r.conda_env is None else str(r.conda_env), str(r.snakefile),
                         _with_verb(r.shellcmd, getattr(r.params, "verb", None))) for r in wf._workflow.rules]


def _with_verb(shellcmd: str | None, verb: object) -> str | None:
    """The shell command with a plain ``params.verb`` (the generic model rules' flashsim verb) filled in."""
    if shellcmd and isinstance(verb, str):
        return shellcmd.replace("{params.verb}", verb)
    return shellcmd


@dataclass
class DryRunJob:
    """One job of a ``snakemake -n`` listing."""

    rule: str
    output: list[str] = field(default_factory=list)
    resources: dict[str, str] = field(default_factory=dict)


_RULE = re.compile(r"^(?:local)?rule (\w+):$")


def parse_dryrun(text: str) -> list[DryRunJob]:
    """Jobs, outputs and resources from the human-readable output of ``snakemake -n``."""
    jobs: list[DryRunJob] = []
    for line in text.splitlines():
        m = _RULE.match(line.strip())
        if m:
            jobs.append(DryRunJob(m.group(1)))
            continue
        if not jobs or not line.startswith("    "):
            continue
        key, _, value = line.strip().partition(": ")
        if key == "output":
            jobs[-1].output = [v.strip() for v in value.split(",") if v.strip()]
        elif key == "resources":
            for item in value.split(", "):
                k, _, v = item.partition("=")
                jobs[-1].resources[k.strip()] = v.strip()
    return jobs
