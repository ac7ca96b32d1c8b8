"""Python source of modules, found and read without importing them.

Importing a component module may import torch (seconds); the runner's cache keys and the
config's argument checks only need the source, so they read it from disk with :mod:`ast`.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import KfbatchError

__all__ = ["module_file", "parameters", "source_closure"]


def module_file(module: str) -> Path | None:
    """The ``.py`` file that defines ``module``, or None if it cannot be found on disk."""
    top = module.split(".")[0]
    roots = _package_roots(top)
    if roots:
        return _locate(roots, module)
    spec = importlib.util.find_spec(top)
    origin = spec.origin if spec is not None else None
    return Path(origin) if module == top and origin and origin.endswith(".py") else None


def parameters(target: str) -> list[str] | None:
    """Keyword parameters of the class or function ``target`` (``a.b.Name``), read from source.

    None when they cannot be known statically: the source is not on disk, the class inherits
    its ``__init__``, or the callable takes ``**kwargs``.
    """
    module, _, name = target.rpartition(".")
    file = module_file(module) if module else None
    if file is None:
        return None
    for node in ast.parse(file.read_bytes()).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            init = next(
                (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None,
            )
            return _keyword_names(init.args, skip_first=True) if init else None
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return _keyword_names(node.args, skip_first=False)
    return None


def _keyword_names(args: ast.arguments, *, skip_first: bool) -> list[str] | None:
    if args.kwarg is not None:
        return None
    positional = [a.arg for a in args.args][1 if skip_first else 0 :]
    return [*positional, *(a.arg for a in args.kwonlyargs)]


def _package_roots(top: str) -> list[Path]:
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise KfbatchError(f"module {top!r} is not importable; check the name and install it")
    return [Path(p) for p in spec.submodule_search_locations or ()]


def _single_module(module: str) -> Path:
    file = module_file(module)
    if file is None:
        raise KfbatchError(f"module {module!r} has no Python source on disk")
    return file


def source_closure(module: str) -> list[Path]:
    """Source files of ``module``, its parent packages and, transitively, same-package imports."""
    top = module.split(".")[0]
    roots = _package_roots(top)
    if not roots:
        return [_single_module(module)]
    if _locate(roots, module) is None:
        raise KfbatchError(f"module {module!r} does not exist in {roots[0]}")
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _locate(roots, name)
        if name in found or path is None:
            continue
        found[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(n for n in _imported_names(path, package) if n.split(".")[0] == top)
    return sorted(found.values())


def _locate(roots: list[Path], name: str) -> Path | None:
    relative = name.split(".")[1:]
    for root in roots:
        base = root.joinpath(*relative)
        for candidate in (base.with_suffix(".py") if relative else None, base / "__init__.py"):
            if candidate is not None and candidate.is_file():
                return candidate
    return None


def _imported_names(path: Path, package: str) -> Iterator[str]:
    """Every module name ``path`` may import (``from a import b`` yields ``a`` and ``a.b``)."""
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
