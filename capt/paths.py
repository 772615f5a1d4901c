"""The workspace and where relative paths resolve (the ground floor: it imports nothing of capt).

Relative paths (``out_dir``, ``data_root``, a profile file, the disk cache) resolve against
:func:`workspace`, the same from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ASSETS = PACKAGE / "assets"


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
