"""Dataset registry: one name -> how to build its train/val/test splits.

Real datasets (``capt.data.real``) and the embedded mini world (``capt.data.miniworld``) register here
the same way, so the few-shot sampler, the trainer and the notebooks never care which one they got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .base import LabeledImages

SPLITS = ("train", "val", "test")
ROLES = ("source", "target", "shift")


@dataclass(frozen=True)
class DatasetSpec:
    """How to build one dataset.

    ``build(split, root, transform) -> LabeledImages``; ``root`` is the data root (``$DATA`` in
    CoOp's DATASETS.md), ignored by the mini world. ``shift_of`` names the dataset whose classes and
    trained prompts a distribution-shift set is evaluated with. ``fingerprint(split)``: a hash of the
    split's content that result keys carry (None, or no function: the files are fixed otherwise, e.g.
    by a download manifest).
    """

    name: str
    kind: str  # "real" or "mini"
    role: str  # "source", "target" or "shift"
    build: Callable[[str, Optional[Path], Optional[Callable]], LabeledImages]
    description: str = ""
    shift_of: Optional[str] = None
    templates: tuple[str, ...] = field(default=("a photo of a {}.",))
    splits: tuple[str, ...] = SPLITS
    fingerprint: Optional[Callable[[str], Optional[str]]] = None


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.role not in ROLES:
        raise ValueError(f"dataset {spec.name!r}: role must be one of {ROLES}, got {spec.role!r}")
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def dataset_names(kind: str | None = None, role: str | None = None) -> list[str]:
    return [s.name for s in _REGISTRY.values()
            if (kind is None or s.kind == kind) and (role is None or s.role == role)]


def get_spec(name: str) -> DatasetSpec:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"unknown dataset {name!r}; valid choices: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def load_dataset(name: str, split: str = "test", root: str | Path | None = None,
                 transform: Callable | None = None) -> LabeledImages:
    """Build split ``split`` of dataset ``name`` (``root`` is the data folder for real datasets)."""
    spec = get_spec(name)
    if split not in spec.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; valid choices: {', '.join(spec.splits)}")
    return spec.build(split, None if root is None else Path(root), transform)


def fingerprint(name: str, split: str) -> str | None:
    """The content hash of split ``split`` of dataset ``name`` for result keys, or None where the
    dataset's files are fixed without one (real datasets: their download manifests)."""
    spec = get_spec(name)
    if spec.fingerprint is None or split not in spec.splits:
        return None
    return spec.fingerprint(split)
