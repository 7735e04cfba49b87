"""The code's layout rules, checked on the source (AST, no imports): public names for anything shared across
modules, and models and runtime free of the reference simulation."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "src" / "flashsim").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])
OWN = ("flashsim", "scikinc_baseline")  # packages whose names count as "another module" of this repository


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in OWN


def _trees() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in SOURCES}


def _defined_private(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, methods, globals, class and ``self`` attributes."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
    return {n for n in out if _private(n)}


def _imported_names(tree: ast.Module) -> set[str]:
    """Local names bound to this repository's modules or objects by imports."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update((a.asname or a.name.split(".")[0]) for a in node.names if _own(a.name))
        elif isinstance(node, ast.ImportFrom) and (node.level or _own(node.module)):
            out.update((a.asname or a.name) for a in node.names)
    return out


def _receiver_is_own_instance(value: ast.expr) -> bool:
    """``self.x``, ``cls.x``, ``super().x``: a class (or subclass) using its own members."""
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for path, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                bad += [f"{_rel(path)}:{node.lineno}: from {node.module or '.'} import {a.name}"
                        for a in node.names if _private(a.name)]
    assert not bad, "import public names only (rename the helper):\n" + "\n".join(bad)


def test_no_private_attribute_of_another_module_is_used():
    """``module._name`` on an imported module or object of this repository, and ``obj._name`` where ``_name`` is
    defined only in other modules (e.g. a benchmark reaching into a family's ``_build``)."""
    trees = _trees()
    defined = {p: _defined_private(t) for p, t in trees.items()}
    elsewhere: dict[str, set[Path]] = {}
    for p, names in defined.items():
        for n in names:
            elsewhere.setdefault(n, set()).add(p)
    bad = []
    for path, tree in trees.items():
        imported = _imported_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)) or _receiver_is_own_instance(node.value):
                continue
            on_import = isinstance(node.value, ast.Name) and node.value.id in imported
            foreign = node.attr not in defined[path] and bool(elsewhere.get(node.attr, set()) - {path})
            if on_import or foreign:
                bad.append(f"{_rel(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "use public names for what other modules need:\n" + "\n".join(sorted(bad))


def _imports_detsim(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("flashsim.detsim") for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module.startswith("flashsim.detsim")
                or (node.module == "flashsim" and any(a.name == "detsim" for a in node.names))):
            lines.append(node.lineno)
    return lines


def test_models_and_runtime_do_not_import_the_reference_simulation():
    """Trained models and the runtime know the detector (flashsim.detector), not the reference simulation;
    only validation's truth hooks (flashsim.validation.truth) may reach it."""
    src = ROOT / "src" / "flashsim"
    files = [*(src / "models").rglob("*.py"), *(src / "runtime").glob("*.py")]
    assert files
    bad = [f"{_rel(p)}:{line}" for p in files for line in _imports_detsim(ast.parse(p.read_text()))]
    assert not bad, "import flashsim.detsim only from detsim itself or validation.truth:\n" + "\n".join(bad)


def test_the_layout_checks_can_fail(tmp_path):
    """The detectors above flag the patterns they are meant to (guards against a check that cannot fail)."""
    tree = ast.parse("from flashsim.export import _write\nfrom flashsim.detsim import truth\n"
                     "import flashsim.io.ecal as D\nD._ranges(1)\n")
    assert _imports_detsim(tree) == [2]
    assert "D" in _imported_names(tree)
    assert any(isinstance(n, ast.ImportFrom) and _private(n.names[0].name) for n in ast.walk(tree))
    assert _defined_private(ast.parse("class A:\n    def _b(self):\n        self._c = 1\n")) == {"_b", "_c"}
