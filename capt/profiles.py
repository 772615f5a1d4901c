"""Profiles: the one place parameter values live.

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
values). :func:`capt.runner.run_profile` executes the chapters with papermill, injecting only
``profile = NAME`` and the caller's overrides: each notebook reads the rest from the profile itself.
A profile file given as a relative path resolves against :func:`capt.paths.workspace`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import yaml

from .chapters import CHAPTERS
from .paths import ASSETS, resolve, workspace

PROFILES = ASSETS / "profiles"
PROFILE_KEYS = ("description", "base", "parameters", "notebooks", "skip")


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
