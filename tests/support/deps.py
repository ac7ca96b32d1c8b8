"""A deptry-style check: every third-party package the code imports is declared.

A package that only arrives as someone else's dependency (PyYAML through kfp, say) breaks
the day that dependency drops it; declaring it pins the contract where users read it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

__all__ = ["declared_distributions", "undeclared_imports"]


def declared_distributions(
    pyproject: Path, *, extras_except: tuple[str, ...] = ("test",)
) -> set[str]:
    """Normalised names of the distributions ``pyproject`` requires (with its extras, except
    ``extras_except``)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra not in extras_except:
            requirements += items
    names = {_normal(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in requirements}
    return names - {_normal(project["name"])}


def undeclared_imports(roots: list[Path], declared: set[str]) -> dict[str, list[str]]:
    """Top-level modules imported under ``roots`` that no declared distribution provides,
    with the files importing each (stdlib and the roots' own packages excluded)."""
    provides = importlib.metadata.packages_distributions()
    local = {root.name for root in roots}
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for module in _imports(path):
                if module in sys.stdlib_module_names or module in local or module == "__future__":
                    continue
                if not {_normal(d) for d in provides.get(module, ())} & declared:
                    found.setdefault(module, []).append(str(path))
    return found


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.partition(".")[0])
    return modules


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
