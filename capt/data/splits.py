"""CoOp split files: reading, writing, checking them against the images on disk.

A CoOp split file (``split_zhou_<Dataset>.json``) is one JSON object::

    {"train": [[relative_path, label, classname], ...], "val": [...], "test": [...]}

``relative_path`` is relative to the dataset's image folder (``oxford_pets/images`` for OxfordPets,
the dataset folder itself for StanfordCars), ``label`` is the 0-based class index and ``classname``
the class name the prompt learners put into their prompts. This module also holds the errors the
real-dataset loaders raise and a small atomic JSON writer shared by the few-shot cache and the
download manifest.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..io import atomic_write_json

SPLIT_NAMES = ("train", "val", "test")

Entry = tuple[str, int, str]


# -- errors --------------------------------------------------------------------------------------
class DatasetNotReady(FileNotFoundError):
    """A real dataset is missing or incomplete on disk.

    The message names the dataset, the path that was looked at and the command that prepares it;
    the same facts are available as attributes ``dataset``, ``path`` and ``command``.
    """

    def __init__(self, dataset: str, path: str | os.PathLike, problem: str, root: str | os.PathLike | None = None,
                 hint: str | None = None):
        self.dataset = dataset
        self.path = str(path)
        root_text = str(root) if root is not None else "DATA"
        self.command = f"python data_scripts/prepare_data.py {dataset} --root {root_text}"
        message = (
            f"dataset {dataset!r} is not ready: {problem} (looked at {self.path}). "
            f"Prepare it with: {self.command}  (or: capt data prepare {dataset} --root {root_text})"
        )
        if hint:
            message += f". {hint}"
        super().__init__(message)

    def __str__(self) -> str:  # OSError's own __str__ would prefix an errno
        return self.args[0]

    def __reduce__(self):  # keep it picklable (DataLoader workers re-raise in the parent)
        return (_rebuild_not_ready, (type(self), self.args[0], dict(self.__dict__)))


def _rebuild_not_ready(cls, message, state):
    err = cls.__new__(cls)
    OSError.__init__(err, message)
    err.__dict__.update(state)
    return err


class MissingImagesError(DatasetNotReady):
    """A split file (or listing) names image files that are not on disk."""

    def __init__(self, dataset: str, missing: Sequence[str | os.PathLike], total: int, split_file: str | os.PathLike,
                 root: str | os.PathLike | None = None):
        self.missing = [str(p) for p in missing]
        problem = (f"{len(self.missing)} of {total} images named by {split_file} are missing "
                   f"(first missing: {self.missing[0]})")
        super().__init__(dataset, split_file, problem, root=root,
                         hint="An interrupted extraction or a split file of another version is the usual cause")


class SplitFileError(ValueError):
    """A split file that is not valid JSON in CoOp's format; the message names the file and the fault."""


# -- split files ---------------------------------------------------------------------------------
def read_split(path: str | os.PathLike) -> dict[str, list[Entry]]:
    """Read and validate a CoOp split file; returns ``{split: [(relpath, label, classname), ...]}``."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise SplitFileError(f"split file {path} is not valid JSON ({exc}); download it again") from None
    if not isinstance(data, dict):
        raise SplitFileError(f"split file {path}: expected a JSON object with keys {SPLIT_NAMES}, "
                             f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(SPLIT_NAMES))
    if unknown:
        raise SplitFileError(f"split file {path}: unknown keys {unknown}; valid keys: {', '.join(SPLIT_NAMES)}")
    out: dict[str, list[Entry]] = {}
    for split, items in data.items():
        if not isinstance(items, list):
            raise SplitFileError(f"split file {path}: {split!r} must be a list of [path, label, classname]")
        entries = []
        for i, item in enumerate(items):
            if (not isinstance(item, (list, tuple)) or len(item) != 3 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], int) or not isinstance(item[2], str)):
                raise SplitFileError(f"split file {path}: {split}[{i}] = {item!r} is not [path, label, classname]")
            if item[1] < 0:
                raise SplitFileError(f"split file {path}: {split}[{i}] has a negative label {item[1]}")
            rel = item[0].replace("\\", "/")
            if rel.startswith("/") or ".." in rel.split("/"):
                raise SplitFileError(f"split file {path}: {split}[{i}] path {item[0]!r} leaves the image folder")
            entries.append((rel, item[1], item[2]))
        out[split] = entries
    return out


def write_split(path: str | os.PathLike, split: Mapping[str, Iterable[Sequence]]) -> Path:
    """Write a split file in CoOp's format (atomically)."""
    data = {}
    for name, items in split.items():
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; valid choices: {', '.join(SPLIT_NAMES)}")
        data[name] = [[str(p), int(y), str(c)] for p, y, c in items]
    return atomic_write_json(path, data)


def classnames_from_split(split: Mapping[str, Sequence[Entry]], source: str = "split file") -> list[str]:
    """The class list (index = label) from the third column of every entry of every split."""
    names: dict[int, str] = {}
    for part, entries in split.items():
        for rel, label, name in entries:
            seen = names.setdefault(label, name)
            if seen != name:
                raise SplitFileError(f"{source}: label {label} is called both {seen!r} and {name!r} ({part}: {rel})")
    if not names:
        raise SplitFileError(f"{source}: no entries")
    n = max(names) + 1
    missing = [y for y in range(n) if y not in names]
    if missing:
        raise SplitFileError(f"{source}: labels must run 0..{n - 1}; {len(missing)} never occur (first: {missing[0]})")
    return [names[y] for y in range(n)]


def find_missing(root: str | os.PathLike, relpaths: Iterable[str]) -> list[str]:
    """Relative paths under ``root`` that are not files, listing each folder once (fast on big sets)."""
    root = Path(root)
    by_dir: dict[str, list[str]] = defaultdict(list)
    order: list[str] = []
    for rel in relpaths:
        order.append(rel)
        head, _, tail = rel.rpartition("/")
        by_dir[head].append(tail)
    present: dict[str, set[str]] = {}
    for head in by_dir:
        folder = root / head if head else root
        try:
            with os.scandir(folder) as it:
                present[head] = {e.name for e in it if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            present[head] = set()
    return [rel for rel in order if rel.rpartition("/")[2] not in present[rel.rpartition("/")[0]]]
