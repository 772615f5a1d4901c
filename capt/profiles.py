"""Profiles: named parameter sets for the book's notebooks, run with papermill.

A profile is a YAML file (``profiles/NAME.yaml``)::

    description: one line
    parameters:          # given to every notebook that declares them
      seeds: [1, 2, 3]
    notebooks:           # per-notebook overrides
      02_in_distribution:
        shots: [1, 4, 16, all]
    skip: [00_mini_world]  # notebooks this profile does not run

``run_profile`` executes each notebook with the parameters it declares (papermill injects them after its
``parameters`` cell), writing the executed copies to an output folder (the book reads them from there).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PROFILES = ROOT / "profiles"


def profile_path(profile: str | Path) -> Path:
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"profile file {p} does not exist")
        return p
    p = PROFILES / f"{profile}.yaml"
    if not p.is_file():
        names = sorted(q.stem for q in PROFILES.glob("*.yaml"))
        raise ValueError(f"unknown profile {profile!r}; valid choices: {', '.join(names)} (or a path to a .yaml file)")
    return p


def load_profile(profile: str | Path) -> dict:
    path = profile_path(profile)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"profile {path} is not valid YAML: {exc}") from None
    unknown = set(data) - {"description", "parameters", "notebooks", "skip"}
    if unknown or not isinstance(data.get("parameters", {}), dict) or not isinstance(data.get("notebooks", {}), dict):
        raise ValueError(f"profile {path} must hold 'description', 'parameters' (a mapping) and 'notebooks' "
                         f"(a mapping of notebook name to parameters); found keys {sorted(data)}")
    known = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    bad = (set(data.get("notebooks", {})) | set(data.get("skip", []))) - known
    if bad:
        raise ValueError(f"profile {path} names unknown notebooks {sorted(bad)}; valid choices: {', '.join(sorted(known))}")
    return data


def notebook_names(profile: dict | None = None) -> list[str]:
    """All notebooks, or those a loaded profile runs (its ``skip`` list left out)."""
    skip = set((profile or {}).get("skip", []))
    return sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb") if p.stem not in skip)


_BINOPS = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mult": lambda a, b: a * b,
           "Div": lambda a, b: a / b}


def _literal(node):
    """Evaluate a parameters-cell value: literals, lists, and + - * / of numbers (e.g. ``4 / 255``); no code."""
    import ast

    if isinstance(node, ast.BinOp) and type(node.op).__name__ in _BINOPS:
        return _BINOPS[type(node.op).__name__](_literal(node.left), _literal(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    return ast.literal_eval(node)


def notebook_defaults(notebook: str | Path) -> dict:
    """The values of a notebook's ``parameters`` cell, read without executing it."""
    import ast

    import nbformat

    path = Path(notebook)
    if not path.suffix:
        path = NOTEBOOKS / f"{notebook}.ipynb"
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


def settings_for(profile: str | Path | dict, notebook: str, overrides: dict | None = None):
    """The :class:`capt.book.Settings` a notebook runs with under ``profile`` (its defaults + the profile)."""
    from .book import Settings

    data = load_profile(profile) if not isinstance(profile, dict) else profile
    params = {**notebook_defaults(notebook), **parameters_for(data, notebook, overrides)}
    return Settings.from_namespace(params)


def select_notebooks(profile: dict, only: Iterable[str] | None = None) -> list[str]:
    """The notebooks a loaded profile runs, restricted to ``only`` (unknown names are an error)."""
    names = notebook_names(profile)
    if not only:
        return names
    only = list(only)
    bad = [n for n in only if n not in names]
    if bad:
        raise ValueError(f"unknown notebooks {bad}; valid choices: {', '.join(names)}")
    return [n for n in names if n in only]


def parameters_for(profile: dict, notebook: str | Path, overrides: dict | None = None) -> dict:
    """The profile's parameters that ``notebook`` declares in its parameters cell (others are dropped)."""
    import papermill as pm

    path = Path(notebook)
    if not path.suffix:
        path = NOTEBOOKS / f"{notebook}.ipynb"
    declared = set(pm.inspect_notebook(str(path)))
    merged = {**profile.get("parameters", {}), **profile.get("notebooks", {}).get(path.stem, {}), **(overrides or {})}
    return {k: v for k, v in merged.items() if k in declared}


def injected_parameters(profile: dict, notebook: str, overrides: dict | None = None) -> dict:
    """Every parameter, the notebook's defaults included: papermill then always replaces the cell it
    injected in an earlier execution (the committed notebooks carry the ci profile's)."""
    return {**notebook_defaults(notebook), **parameters_for(profile, notebook, overrides)}


def run_profile(profile: str | Path, output_dir: str | Path, only: Iterable[str] | None = None,
                overrides: dict | None = None, kernel: str = "python3", log=print) -> list[Path]:
    """Execute the notebooks of ``profile`` into ``output_dir`` (the same name per notebook)."""
    import papermill as pm

    data = load_profile(profile)
    names = select_notebooks(data, only)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, name in enumerate(names, 1):
        params = injected_parameters(data, name, overrides)
        log(f"[{i}/{len(names)}] {name} ({Path(profile).stem} profile)")
        t0 = time.perf_counter()
        target = out / f"{name}.ipynb"
        pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(target), parameters=params, kernel_name=kernel,
                            cwd=str(NOTEBOOKS), progress_bar=True, report_mode=False)
        log(f"    done in {time.perf_counter() - t0:.0f}s -> {target}")
        written.append(target)
    return written
