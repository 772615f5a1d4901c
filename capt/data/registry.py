"""Dataset registry: one name -> how to build its train/val/test splits.

Real datasets (``capt.data.real``) and the embedded mini world (``capt.data.miniworld``) register here
the same way, so the few-shot sampler, the trainer and the notebooks never care which one they got.
A user's folder needs no registering: a name ``folder:/abs/path`` builds its entry from the folder
itself (``capt.data.folder``), so the name alone means the same dataset in any process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

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
    kind: str  # "real", "mini" or "folder"
    role: str  # "source", "target" or "shift"
    build: Callable[[str, Optional[Path], Optional[Callable]], LabeledImages]
    description: str = ""
    shift_of: Optional[str] = None
    templates: tuple[str, ...] = field(default=("a photo of a {}.",))
    splits: tuple[str, ...] = SPLITS
    # Datasets whose content is not fixed by a download manifest or the code (a user's folder):
    fingerprint: Optional[Callable[[str], Optional[str]]] = None  # split -> content hash (enters result keys)
    record: Optional[Callable[[Path], Path]] = None     # out_dir -> the split file written there
    check_shots: Optional[Callable[[Sequence], None]] = None  # shots -> error if a class has too few


_REGISTRY: dict[str, DatasetSpec] = {}
_PREFIXES: dict[str, Callable[[str], DatasetSpec]] = {}


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


def register_prefix(prefix: str, build_spec: Callable[[str], DatasetSpec]) -> None:
    """Names starting with ``prefix`` (``folder:``) build their entry from the name itself, on demand: the
    name alone means the same dataset in any process (a papermill kernel sees nothing a caller registered)."""
    if prefix in _PREFIXES:
        raise ValueError(f"dataset prefix {prefix!r} is registered twice")
    _PREFIXES[prefix] = build_spec


def get_spec(name: str) -> DatasetSpec:
    for prefix, build_spec in _PREFIXES.items():
        if isinstance(name, str) and name.startswith(prefix):
            return build_spec(name)
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"unknown dataset {name!r}; valid choices: {', '.join(sorted(_REGISTRY))}; "
            "or your own folder of class folders, written folder:/abs/path (book: Your own data)"
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


def record_split(name: str, out_dir: str | Path) -> Path | None:
    """Write the split a dataset uses under ``out_dir`` where it is not fixed elsewhere (a folder)."""
    spec = get_spec(name)
    return None if spec.record is None else spec.record(Path(out_dir))


def check_shots(name: str, shots: Sequence) -> None:
    """Fail before anything runs if ``name``'s classes have fewer training images than ``shots`` asks."""
    spec = get_spec(name)
    if spec.check_shots is not None:
        spec.check_shots(list(shots))
