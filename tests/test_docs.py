"""The README and docs/ name only things that exist: repository paths, links and flashsim modules or names."""

from __future__ import annotations

import ast
import glob
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# top-level entries of the source tree; outputs (data/, models/, reports/, results/, logs/) are made by the workflow
SOURCE_TOPS = ("src/", "tests/", "rules/", "docs/", "scripts/", "profiles/", "schemas/", "envs/", "benchmarks/",
               ".ci/", ".dvc/", "Snakefile", "params.yaml", "Makefile", "pyproject.toml", "dvc.yaml",
               ".gitlab-ci.yml")
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
MODULE = re.compile(r"\bflashsim(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _mentions(doc: Path) -> tuple[set[str], set[str], set[str]]:
    text = doc.read_text()
    paths, modules = set(), set()
    for code in CODE.findall(text):
        for token in code.split():
            token = token.strip("(),;:'\"")
            if token.startswith(SOURCE_TOPS) and not re.search(r"[<{]|NAME|\.\.\.", token):
                paths.add(token.split(":")[0])
        modules.update(MODULE.findall(code))
    links = {link for link in LINK.findall(text) if "://" not in link}
    return paths, links, modules


@cache
def _defined_names(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def _ignored(path: str) -> bool:
    """A git-ignored local file (e.g. ``.dvc/config.local``): documented, never committed."""
    return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path]).returncode == 0


def _module_file(dotted: str) -> Path | None:
    base = ROOT / "src" / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolves(dotted: str) -> bool:
    """``flashsim.a.b`` is a module, or a name (class, function, constant, method) defined in one. Dotted names
    whose first part is no module of the package (MLflow tag names such as ``flashsim.mlflow.fallback``) are not
    code references."""
    parts = dotted.split(".")
    if _module_file(".".join(parts[:2])) is None and not (ROOT / "src" / "flashsim" / parts[1]).is_dir():
        return parts[1] not in {"models", "io", "runtime", "validation", "mlops", "detsim", "bench"}
    for cut in range(len(parts), 1, -1):
        module = _module_file(".".join(parts[:cut]))
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        if rest[0] not in _defined_names(module):
            return False
        if len(rest) == 1:
            return True
        # Class.method: look inside the class body
        tree = ast.parse(module.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == rest[0]:
                inner = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
                inner |= {t.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets
                          if isinstance(t, ast.Name)}
                inner |= {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)
                          and isinstance(n.target, ast.Name)}
                return rest[1] in inner
        return True  # an attribute of an imported object: the first name exists
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_paths_links_and_modules_exist(doc):
    paths, links, modules = _mentions(doc)
    missing = [p for p in sorted(paths) if not (glob.glob(str(ROOT / p)) or (ROOT / p).exists() or _ignored(p))]
    missing += [f"link {link}" for link in sorted(links) if not (doc.parent / link).exists()]
    missing += [f"module {m}" for m in sorted(modules) if not _resolves(m)]
    assert not missing, f"{doc.relative_to(ROOT)} names what does not exist: {missing}"


def test_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_checker_catches_a_missing_path(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("see `src/flashsim/nowhere.py`, [this](nothere.md) and `flashsim.models.NO_SUCH_TABLE`\n")
    paths, links, modules = _mentions(doc)
    assert paths == {"src/flashsim/nowhere.py"} and links == {"nothere.md"}
    assert modules == {"flashsim.models.NO_SUCH_TABLE"}
    assert not _resolves("flashsim.models.NO_SUCH_TABLE") and _resolves("flashsim.models.FAMILIES")
