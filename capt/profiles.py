"""Profiles: the one place parameter values live, and where files resolve.

A profile is a YAML file in ``profiles/`` (shipped inside the package as ``capt/assets/profiles``; the
checkout's ``profiles`` is a link to it)::

    description: one line
    base: mini             # optional: start from another profile's values
    parameters:            # every chapter
      seeds: [1, 2, 3]
    notebooks:             # per-chapter values, over the common ones
      02_in_distribution:
        shots: [1, 4, 16, all]
    skip: [00_mini_world]  # chapters this profile does not run

Values the profile leaves out are the library's defaults (:class:`capt.notebook.Settings`: the paper's
values). :func:`run_profile` executes the chapters with papermill, injecting only ``profile = NAME`` and
the caller's overrides: each notebook reads the rest from the profile itself.

Relative paths (``out_dir``, ``data_root``, a profile file) resolve against :func:`workspace`, the same
from any working directory.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable

import yaml

PACKAGE = Path(__file__).resolve().parent
PROFILES = PACKAGE / "assets" / "profiles"
PROFILE_KEYS = ("description", "base", "parameters", "notebooks", "skip")


def checkout() -> Path | None:
    """The source checkout capt runs from (it holds ``notebooks/``), or None for an installed package."""
    root = PACKAGE.parent
    return root if (root / "notebooks").is_dir() and (root / "pyproject.toml").is_file() else None


def workspace() -> Path:
    """Where relative paths resolve: ``$CAPT_HOME`` if set, else the checkout, else ``~/capt``."""
    env = os.environ.get("CAPT_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return checkout() or Path.home() / "capt"


def resolve(path: str | os.PathLike | None) -> Path | None:
    """``path`` made absolute against :func:`workspace` (``~`` expanded); None stays None."""
    if path is None:
        return None
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (workspace() / p).resolve()


def notebooks_dir() -> Path:
    root = checkout()
    if root is None:
        raise FileNotFoundError("the chapters' notebooks come with a source checkout of capt (git clone ...); "
                                "an installed package can still build Settings and run plans")
    return root / "notebooks"


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def profile_path(profile: str | os.PathLike) -> Path:
    """A profile's file: a name in ``profiles/`` or a path to a ``.yaml`` file."""
    p = Path(os.path.expanduser(str(profile)))
    if p.suffix in (".yaml", ".yml"):
        for candidate in (p, resolve(p)):
            if candidate.is_file():
                return candidate.resolve()
        raise FileNotFoundError(f"profile file {p} does not exist (relative paths are tried from the current "
                                f"folder and from {workspace()})")
    q = PROFILES / f"{profile}.yaml"
    if not q.is_file():
        raise ValueError(f"unknown profile {str(profile)!r}; valid choices: {', '.join(profile_names())} "
                         "(or a path to a .yaml file)")
    return q


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"profile {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"profile {path} must be a mapping with keys {', '.join(PROFILE_KEYS)}")
    unknown = sorted(set(data) - set(PROFILE_KEYS))
    if unknown or not isinstance(data.get("parameters") or {}, dict) or not isinstance(data.get("notebooks") or {}, dict):
        raise ValueError(f"profile {path} must hold {', '.join(PROFILE_KEYS)} ('parameters' a mapping, 'notebooks' "
                         f"a mapping of chapter name to parameters); found keys {sorted(data)}"
                         + (f"; a flat file of parameters goes to papermill with -f, not to a profile" if unknown else ""))
    return data


def load_profile(profile: str | os.PathLike | dict) -> dict:
    """A profile with its ``base`` chain merged: {name, description, parameters, notebooks, skip}."""
    from .notebook import CHAPTERS

    if isinstance(profile, dict):
        return profile
    path = profile_path(profile)
    data, seen = _read(path), [path]
    chain = [data]
    while chain[-1].get("base"):
        base = profile_path(chain[-1]["base"])
        if base in seen:
            raise ValueError(f"profile {path}: 'base' goes round in a circle ({' -> '.join(p.stem for p in seen)})")
        seen.append(base)
        chain.append(_read(base))
    params, per_chapter = {}, {}
    for d in reversed(chain):  # the base first, each profile over it
        params.update(d.get("parameters") or {})
        for nb, values in (d.get("notebooks") or {}).items():
            per_chapter.setdefault(nb, {}).update(values or {})
    skip = list(data.get("skip") or [])
    bad = sorted((set(per_chapter) | set(skip)) - set(CHAPTERS))
    if bad:
        raise ValueError(f"profile {path} names unknown chapters {bad}; valid choices: {', '.join(CHAPTERS)}")
    name = path.stem if path.parent == PROFILES else str(path)
    return {"name": name, "description": data.get("description", ""), "parameters": params,
            "notebooks": per_chapter, "skip": skip}


def chapter_values(profile: dict, chapter: str | None) -> dict:
    """The values a loaded profile gives ``chapter`` (its common parameters, then the chapter's own)."""
    return {**profile["parameters"], **(profile["notebooks"].get(chapter, {}) if chapter else {})}


def notebook_names(profile: dict | None = None) -> list[str]:
    """The chapters a loaded profile runs (its ``skip`` list left out), or all."""
    from .notebook import CHAPTERS

    skip = set((profile or {}).get("skip", []))
    return [n for n in CHAPTERS if n not in skip]


def select_notebooks(profile: dict, only: Iterable[str] | None = None) -> list[str]:
    """The chapters a loaded profile runs, restricted to ``only`` (unknown names are an error)."""
    names = notebook_names(profile)
    if not only:
        return names
    only = list(only)
    bad = [n for n in only if n not in names]
    if bad:
        raise ValueError(f"unknown notebooks {bad}; valid choices: {', '.join(names)}")
    return [n for n in names if n in only]


_BINOPS = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mult": lambda a, b: a * b,
           "Div": lambda a, b: a / b}


def _literal(node):
    """A parameters-cell value: literals, lists, and + - * / of numbers (e.g. ``4 / 255``); never code."""
    import ast

    if isinstance(node, ast.BinOp) and type(node.op).__name__ in _BINOPS:
        return _BINOPS[type(node.op).__name__](_literal(node.left), _literal(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    return ast.literal_eval(node)


def notebook_defaults(notebook: str | os.PathLike) -> dict:
    """The values of a notebook's ``parameters`` cell, read without executing it."""
    import ast

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


def run_profile(profile: str | os.PathLike, output_dir: str | os.PathLike, only: Iterable[str] | None = None,
                overrides: dict | None = None, kernel: str = "python3", log=print) -> list[Path]:
    """Execute the chapters of ``profile`` into ``output_dir`` (the same name per notebook)."""
    import papermill as pm

    from .execution import record as record_execution
    from .notebook import Settings

    data = load_profile(profile)
    overrides = dict(overrides or {})
    Settings.check_names(overrides, "capt run --set")
    names = select_notebooks(data, only)
    for name in names:  # every chapter's settings are checked before the first one runs
        Settings.from_profile(data, name, **overrides)
    nb_dir = notebooks_dir()
    out = resolve(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref = str(profile_path(profile)) if Path(str(profile)).suffix in (".yaml", ".yml") else data["name"]
    written = []
    _accept_settings_in_papermill()
    for i, name in enumerate(names, 1):
        log(f"[{i}/{len(names)}] {name} ({data['name']} profile)")
        t0 = time.perf_counter()
        target = out / f"{name}.ipynb"
        pm.execute_notebook(str(nb_dir / f"{name}.ipynb"), str(target), parameters={"profile": ref, **overrides},
                            kernel_name=kernel, cwd=str(nb_dir), progress_bar=True, report_mode=False)
        hide_injected(target)
        record_execution(target)  # the machine and versions beside papermill's own timings
        log(f"    done in {time.perf_counter() - t0:.0f}s -> {target}")
        written.append(target)
    return written


class _AcceptedSettings(logging.Filter):
    """Drops papermill's "Passed unknown parameter: NAME" for a NAME that a chapter's Settings takes.

    papermill knows a notebook's parameters only from the assignments in its ``parameters`` cell, and
    the chapters keep that cell short (``profile`` and their own knobs): every other setting reaches
    :meth:`capt.notebook.Settings.for_chapter` through the injected cell, where it is read. So the
    warning would tell a reader that a value they set was ignored when it was used. A name that no
    setting takes still warns here, and fails the chapter's checks (and ``capt run``'s, before papermill)."""

    PREFIX = "Passed unknown parameter: "

    def filter(self, record: logging.LogRecord) -> bool:
        from .notebook import Settings

        message = record.getMessage()
        return not (message.startswith(self.PREFIX) and message[len(self.PREFIX):].strip() in Settings.names())


def _accept_settings_in_papermill() -> None:
    log = logging.getLogger("papermill")
    if not any(isinstance(f, _AcceptedSettings) for f in log.filters):
        log.addFilter(_AcceptedSettings())


def hide_injected(path: str | os.PathLike) -> None:
    """Collapse the cell papermill injected (tag ``hide-cell``): the book shows results first, and the
    values a run used stay one click away."""
    import nbformat

    from .io import atomic_write_text

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    atomic_write_text(path, nbformat.writes(nb))
