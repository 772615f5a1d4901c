"""Build the Jupyter Book from executed notebooks in a scratch copy of its sources, as `capt book --no-run`
does (Jupyter Book never executes them: ``execute_notebooks: off``). Used by the browser tests (the
committed notebooks) and the paper profile's dress rehearsal (its own executed chapters)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from capt.cli import jupyter_book_build, write_book_pages

ROOT = Path(__file__).resolve().parent.parent
# What `jupyter-book build` reads besides the notebooks (the same tree `capt book --no-run` builds).
BOOK_FILES = ("_config.yml", "_toc.yml")
BOOK_DIRS = ("book", "_static", "_templates", "_ext")


def build_book(notebooks: Iterable[Path], src: Path, profile: str | None = None) -> Path:
    """The built HTML folder of the book whose experiment chapters are ``notebooks``, built in ``src``; with
    ``profile`` (the one the notebooks ran), the pages `capt book` generates beside them too (the glance,
    the results tables to download, the execution statistics), from that profile's results."""
    src.mkdir(parents=True, exist_ok=True)
    for f in BOOK_FILES:
        shutil.copy2(ROOT / f, src / f)
    for d in BOOK_DIRS:
        if (ROOT / d).is_dir():
            shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("experiments", "_build"))
    (src / "book" / "experiments").mkdir()
    for nb in notebooks:
        shutil.copy2(nb, src / "book" / "experiments" / Path(nb).name)
    if profile is not None:
        write_book_pages(profile, {}, src / "book" / "experiments")
    done = subprocess.run(jupyter_book_build(src) + ["-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"jupyter-book build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return src / "_build" / "html"
