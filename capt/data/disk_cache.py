"""A disk cache for generated arrays (the mini world's rendered splits).

Rendering the mini source task's training pool takes ~6 s, and every chapter, sweep worker and test
process used to render it again, only to hash it for the result keys. The cache keeps each split as an
``.npz`` under ``outputs/.cache`` in the workspace, named by a key that includes the sha256 of the code
that generates it, so a change to the generator never reads a stale file. Files are written atomically;
one that cannot be read is generated again and replaced. ``CAPT_NO_DISK_CACHE=1`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..io import atomic_path
from ..paths import resolve


def source_sha(*files: str | os.PathLike) -> str:
    """A short sha256 of source files (the generator's code) and numpy's version (its random streams)."""
    h = hashlib.sha256(np.__version__.encode())
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path | None:
    if os.environ.get("CAPT_NO_DISK_CACHE", "") not in ("", "0"):
        return None
    return resolve("outputs/.cache")


def cached_arrays(name: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``make()``'s arrays, from ``<cache>/<name>.npz`` when it holds them (written there otherwise)."""
    folder = cache_dir()
    path = None if folder is None else folder / f"{name}.npz"
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:  # a truncated or foreign file: generate again and replace it
            pass
    arrays = make()
    if path is not None:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)
        except OSError:  # a read-only or full workspace: the arrays are still right, just not kept
            pass
    return arrays
