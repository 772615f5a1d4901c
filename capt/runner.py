"""Run a profile's chapters with papermill (above :class:`capt.notebook.Settings`, which checks them)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

from . import execution
from .io import atomic_write_text
from .notebook import Settings
from .papermill_hook import install as install_papermill_hook
from .paths import notebooks_dir, resolve
from .profiles import load_profile, profile_path, select_notebooks


def run_profile(profile: str | os.PathLike, output_dir: str | os.PathLike, only: Iterable[str] | None = None,
                overrides: dict | None = None, kernel: str = "python3", log=print) -> list[Path]:
    """Execute the chapters of ``profile`` into ``output_dir`` (the same name per notebook)."""
    import papermill as pm

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
    install_papermill_hook()  # papermill's plugin import does this where capt is installed; a bare checkout has no entry point
    for i, name in enumerate(names, 1):
        log(f"[{i}/{len(names)}] {name} ({data['name']} profile)")
        t0 = time.perf_counter()
        target = out / f"{name}.ipynb"
        pm.execute_notebook(str(nb_dir / f"{name}.ipynb"), str(target), parameters={"profile": ref, **overrides},
                            kernel_name=kernel, cwd=str(nb_dir), progress_bar=True, report_mode=False)
        finish_notebook(target)
        log(f"    done in {time.perf_counter() - t0:.0f}s -> {target}")
        written.append(target)
    return written


def finish_notebook(path: str | os.PathLike) -> None:
    """One pass over an executed chapter: collapse the cell papermill injected (tag ``hide-cell``: the book
    shows results first, and the values a run used stay one click away), and stamp the machine and versions
    that ran it beside papermill's own timings (the execution-statistics page reads them)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    nb.metadata[execution.KEY] = execution.machine()
    atomic_write_text(path, nbformat.writes(nb))
