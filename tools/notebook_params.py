"""A notebook's parameters cell read without executing it (the tests hold each chapter's cell to its
entry in :data:`capt.chapters.CHAPTERS`)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from capt.paths import notebooks_dir

_BINOPS = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mult": lambda a, b: a * b,
           "Div": lambda a, b: a / b}


def _literal(node):
    """A parameters-cell value: literals, lists, and + - * / of numbers (e.g. ``4 / 255``); never code."""
    if isinstance(node, ast.BinOp) and type(node.op).__name__ in _BINOPS:
        return _BINOPS[type(node.op).__name__](_literal(node.left), _literal(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    return ast.literal_eval(node)


def notebook_defaults(notebook: str | os.PathLike) -> dict:
    """The values of a notebook's ``parameters`` cell, read without executing it."""
    import nbformat

    path = Path(notebook)
    if not path.suffix:
        path = notebooks_dir() / f"{notebook}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} must have exactly one cell tagged 'parameters', found {len(cells)}")
    out = {}
    for stmt in ast.parse(cells[0].source).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                out[stmt.targets[0].id] = _literal(stmt.value)
            except (ValueError, TypeError, SyntaxError):
                raise ValueError(f"{path}: parameter {stmt.targets[0].id} must be a literal "
                                 "(numbers, strings, lists, None, arithmetic on numbers)") from None
    return out


