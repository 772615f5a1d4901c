"""What of each real dataset is on disk: ``capt data status`` and the downloader's before/after check.

It builds every split through :mod:`capt.data.real`'s readers, so "ready" means exactly that the
experiments can read the dataset, not only that a folder exists.
"""

from __future__ import annotations

import os

from .real import REAL_DATASETS, build_split
from .registry import get_spec
from .splits import DatasetNotReady

__all__ = ["dataset_status"]


def dataset_status(name: str, root: str | os.PathLike | None = None) -> dict:
    """``{"name", "state": "missing"|"partial"|"ready", "path", "counts": {split: n}, "classes", "detail"}``.

    ``missing``: the dataset's folder does not exist; ``partial``: it exists but some split cannot be
    built (the detail says why); ``ready``: every split builds and every image it names exists.
    """
    if name not in REAL_DATASETS:
        get_spec(name)                                  # unknown name: the registry's message
        raise ValueError(f"dataset {name!r} is not a real dataset; valid choices: {', '.join(REAL_DATASETS)}")
    info = REAL_DATASETS[name]
    folder = info.folder_path(root)
    out = {"name": name, "state": "missing", "path": str(folder), "counts": {}, "classes": None,
           "expected": dict(info.expected), "detail": ""}
    if not folder.is_dir():
        out["detail"] = f"no folder {folder}"
        return out
    problems = []
    for split in info.splits:
        try:
            ds = build_split(info, split, root, None)
        except (DatasetNotReady, ValueError) as exc:
            problems.append(f"{split}: {exc}")
            continue
        out["counts"][split] = len(ds)
        out["classes"] = ds.num_classes
    out["state"] = "partial" if problems else "ready"
    out["detail"] = "; ".join(problems)
    return out
