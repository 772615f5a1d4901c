"""Run a profile's chapters with papermill (above :class:`capt.notebook.Settings`, which checks them)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable

from .execution import record as record_execution
from .io import atomic_write_text
from .notebook import Settings
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

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    atomic_write_text(path, nbformat.writes(nb))
