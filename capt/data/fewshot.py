"""Few-shot sampling and the base-to-new class split, deterministic on every machine.

``sample_few_shot(train, shots, seed)`` keeps exactly ``shots`` items per class. Within each class the
items are ranked by ``sha256(f"{seed}:{key}")`` (``key``: the item's stable key, for real datasets the
image path relative to the image folder) and the lowest ranks are kept, so the choice depends only on
the seed and the keys: not on Python's ``hash()``, on set or dict ordering, on the order the files
were listed in, on the Python version or on the machine. Adding or removing an image changes the
choice only in its own class, and only if it ranks among the chosen.

With ``cache_dir`` the chosen keys are written to ``<cache_dir>/<dataset>_shot<k>_seed<s>.json``
with what they were drawn from, so a run can be audited and repeated; a later call reads the file
instead of sampling again, and a file that does not match the dataset is an error, never silently
used.

``base_new_split(dataset)`` follows CoCoOp: classes sorted by label, the first ``ceil(n/2)`` are
"base", the rest "new", each relabelled from 0. Sample the few shots first, then split (CoCoOp's
order), so base and new share one few-shot file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Union

from .base import LabeledImages
from ..io import atomic_write_json

__all__ = ["PROTOCOL_SHOTS", "ALGORITHM", "sample_few_shot", "few_shot_keys", "base_new_split",
           "validate_shots", "cache_path", "dataset_fingerprint"]

PROTOCOL_SHOTS = (1, 2, 4, 8, 16)
ALGORITHM = "sha256-rank/v1"
FORMAT = "capt-fewshot/v1"

Shots = Union[int, str]


def validate_shots(shots) -> int | str:
    """A positive int (the protocol uses 1, 2, 4, 8, 16) or ``"all"``; numeric strings are accepted."""
    valid = f"valid choices: {', '.join(map(str, PROTOCOL_SHOTS))} (any positive integer) or 'all'"
    if isinstance(shots, str):
        text = shots.strip().lower()
        if text == "all":
            return "all"
        if text.isdigit() and int(text) > 0:
            return int(text)
        raise ValueError(f"shots={shots!r} is not a number of shots; {valid}")
    if isinstance(shots, bool) or not isinstance(shots, int):
        # numpy integers are fine; floats such as 16.0 are not silently truncated
        if hasattr(shots, "__index__") and not isinstance(shots, bool):
            shots = int(shots.__index__())
        else:
            raise ValueError(f"shots={shots!r} ({type(shots).__name__}) is not a number of shots; {valid}")
    if shots <= 0:
        raise ValueError(f"shots={shots} must be positive; {valid}")
    return shots


def _validate_seed(seed) -> int:
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise ValueError(f"seed={seed!r} must be an integer (the protocol uses 1, 2, 3)")
    return int(seed.__index__())


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()


def dataset_fingerprint(dataset: LabeledImages) -> str:
    """sha256 over the sorted ``key<TAB>label`` lines and the class names: what a few-shot file is drawn from."""
    h = hashlib.sha256()
    for key, label in sorted(zip(dataset.keys, dataset.labels)):
        h.update(f"{key}\t{label}\n".encode("utf-8"))
    h.update(("\x00" + "\n".join(dataset.classnames)).encode("utf-8"))
    return h.hexdigest()


def few_shot_keys(dataset: LabeledImages, shots: int, seed: int) -> list[str]:
    """The keys ``sample_few_shot`` keeps (in dataset order), warning about classes with too few items."""
    by_class: dict[int, list[str]] = defaultdict(list)
    keys, labels = dataset.keys, dataset.labels
    if len(set(keys)) != len(keys):
        raise ValueError(f"dataset {dataset.name!r} has duplicate keys; few-shot splits need unique keys")
    for key, label in zip(keys, labels):
        by_class[label].append(key)
    chosen: set[str] = set()
    short = []
    for label in range(dataset.num_classes):
        members = by_class.get(label, [])
        if len(members) < shots:
            short.append((label, len(members)))
        chosen.update(sorted(members, key=lambda k: (_rank(seed, k), k))[:shots])
    for label, n in short:
        warnings.warn(
            f"dataset {dataset.name!r}: class {label} ({dataset.classnames[label]!r}) has only {n} training "
            f"images, fewer than shots={shots}; all {n} are used", stacklevel=3)
    return [k for k in keys if k in chosen]


def cache_path(cache_dir: str | os.PathLike, dataset: LabeledImages, shots: Shots, seed: int) -> Path:
    return Path(cache_dir) / f"{dataset.name}_shot{shots}_seed{seed}.json"


def sample_few_shot(dataset: LabeledImages, shots: Shots, seed: int,
                    cache_dir: str | os.PathLike | None = None) -> LabeledImages:
    """``shots`` items per class of ``dataset`` (its train split), chosen by ``seed``; ``"all"`` keeps all.

    A class with fewer items keeps all of them, with a warning naming the class. With ``cache_dir``
    the split is read from / written to a small JSON file (see the module docstring).
    """
    shots = validate_shots(shots)
    seed = _validate_seed(seed)
    if shots == "all":
        return dataset.subset(range(len(dataset)))
    path = cache_path(cache_dir, dataset, shots, seed) if cache_dir is not None else None
    if path is not None and path.exists():
        return dataset.subset_by_keys(_read_cache(path, dataset, shots, seed))
    keys = few_shot_keys(dataset, shots, seed)
    if path is not None:
        label_of = dict(zip(dataset.keys, dataset.labels))
        atomic_write_json(path, {
            "format": FORMAT, "algorithm": ALGORITHM, "dataset": dataset.name,
            "shots": shots, "seed": seed, "num_classes": dataset.num_classes,
            "source_items": len(dataset), "source_fingerprint": dataset_fingerprint(dataset),
            "keys": keys, "labels": [label_of[k] for k in keys],
        })
    return dataset.subset_by_keys(keys)


def _read_cache(path: Path, dataset: LabeledImages, shots: int, seed: int) -> list[str]:
    def fail(why: str) -> ValueError:
        return ValueError(f"few-shot file {path} does not match dataset {dataset.name!r} "
                          f"(shots={shots}, seed={seed}): {why}. Delete it to sample again, or use another cache_dir")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"it is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise fail(f"its format is not {FORMAT!r}")
    expected = {"algorithm": ALGORITHM, "dataset": dataset.name, "shots": shots, "seed": seed,
                "num_classes": dataset.num_classes, "source_items": len(dataset)}
    for field, value in expected.items():
        if data.get(field) != value:
            raise fail(f"{field} is {data.get(field)!r}, expected {value!r}")
    if data.get("source_fingerprint") != dataset_fingerprint(dataset):
        raise fail("the dataset's keys, labels or class names differ from those it was drawn from")
    keys, labels = data.get("keys"), data.get("labels")
    if not isinstance(keys, list) or not isinstance(labels, list) or len(keys) != len(labels):
        raise fail("keys and labels must be two lists of equal length")
    label_of = dict(zip(dataset.keys, dataset.labels))
    for key, label in zip(keys, labels):
        if label_of.get(key, None) != label:
            raise fail(f"key {key!r} with label {label!r} is not in the dataset")
    return keys


def base_new_split(dataset: LabeledImages) -> tuple[LabeledImages, LabeledImages]:
    """(base, new): the first ``ceil(n/2)`` classes by label and the rest, each relabelled from 0."""
    n = dataset.num_classes
    if n < 2:
        raise ValueError(f"dataset {dataset.name!r} has {n} class; a base-to-new split needs at least 2")
    m = math.ceil(n / 2)
    names = dataset.classnames
    base = dataset.relabel(names[:m], {y: y for y in range(m)})
    new = dataset.relabel(names[m:], {y: y - m for y in range(m, n)})
    return base, new
