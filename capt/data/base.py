"""The one dataset shape every loader, sampler, trainer and evaluator in capt consumes.

A :class:`LabeledImages` yields ``(image, label)`` with ``image`` a float tensor ``(3, H, W)`` in
``[0, 1]`` (CLIP's normalisation lives inside the model wrapper, so attacks work in pixel space) and
carries what prompt learning needs besides: the class names, the hand-crafted templates used by the
zero-shot baseline and the frozen teacher, and a stable string key per item so a few-shot split can be
written down, audited and repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class LabeledImages(Dataset):
    """Base class: subclasses implement :meth:`_load` for one underlying item."""

    def __init__(
        self,
        name: str,
        classnames: Sequence[str],
        labels: Sequence[int],
        keys: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        indices: Sequence[int] | None = None,
    ):
        if len(classnames) == 0:
            raise ValueError(f"dataset {name!r} has an empty class list")
        if len(labels) != len(keys):
            raise ValueError(f"dataset {name!r}: {len(labels)} labels but {len(keys)} keys")
        self.name = name
        self.classnames = list(classnames)
        self.templates = list(templates)
        self._labels = list(labels)
        self._keys = list(keys)
        self._indices = list(range(len(self._labels))) if indices is None else list(indices)

    # -- what callers use -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self._indices[i]
        return self._load(j), self._labels[j]

    @property
    def labels(self) -> list[int]:
        return [self._labels[j] for j in self._indices]

    @property
    def keys(self) -> list[str]:
        return [self._keys[j] for j in self._indices]

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def subset(self, indices: Sequence[int]) -> "LabeledImages":
        """A view on some of this dataset's items (positions in this view), sharing storage."""
        import copy

        view = copy.copy(self)
        view._indices = [self._indices[i] for i in indices]
        return view

    def subset_by_keys(self, keys: Sequence[str]) -> "LabeledImages":
        """The items with these keys, in the given order; unknown keys are an error."""
        position = {k: i for i, k in enumerate(self.keys)}
        missing = [k for k in keys if k not in position]
        if missing:
            raise ValueError(
                f"dataset {self.name!r}: {len(missing)} split keys are not in the dataset "
                f"(first: {missing[0]!r}); the split file belongs to another dataset or version"
            )
        return self.subset([position[k] for k in keys])

    def relabel(self, classnames: Sequence[str], label_map: dict[int, int]) -> "LabeledImages":
        """Keep only items whose label is in ``label_map`` and renumber them (base-to-new splits)."""
        import copy

        keep = [i for i, j in enumerate(self._indices) if self._labels[j] in label_map]
        view = copy.copy(self)
        view._indices = [self._indices[i] for i in keep]
        view._labels = [label_map.get(lab, -1) for lab in self._labels]
        view.classnames = list(classnames)
        return view

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, classes={self.num_classes})"

    # -- what subclasses provide --------------------------------------------------------------
    def _load(self, j: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TensorImages(LabeledImages):
    """Images held in memory as one uint8 tensor ``(N, 3, H, W)`` (the mini world)."""

    def __init__(self, name, images: torch.Tensor, labels, classnames, templates=DEFAULT_TEMPLATES,
                 keys: Sequence[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError("TensorImages expects a uint8 tensor of shape (N, 3, H, W)")
        keys = [f"{name}/{i}" for i in range(len(images))] if keys is None else keys
        super().__init__(name, classnames, [int(y) for y in labels], keys, templates)
        self.images = images

    def _load(self, j: int) -> torch.Tensor:
        return self.images[j].float().div_(255.0)


class UnreadableImageError(RuntimeError):
    """An image file that PIL cannot decode; the message names the file."""


class ImageFiles(LabeledImages):
    """Images stored as files on disk, decoded with PIL and turned into ``[0, 1]`` tensors.

    ``transform`` maps a PIL image to a float tensor in ``[0, 1]`` (``load_clip``'s ``preprocess``).
    A file that cannot be decoded raises :class:`UnreadableImageError` naming its path, or, with
    ``skip_unreadable=True``, is replaced by the next readable item and counted in ``self.skipped``.
    """

    #: what an unreadable file's message tells the user to do
    unreadable_fix = "re-run its data script, or pass skip_unreadable=True to skip such files"

    def __init__(self, name, root: str | Path, paths: Sequence[str], labels, classnames,
                 templates=DEFAULT_TEMPLATES, transform: Callable | None = None,
                 skip_unreadable: bool = False):
        super().__init__(name, classnames, [int(y) for y in labels], list(paths), templates)
        self.root = Path(root)
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.skipped: list[str] = []

    def path(self, j: int) -> Path:
        return self.root / self._keys[j]

    def _decode(self, j: int) -> torch.Tensor:
        from PIL import Image

        path = self.path(j)
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.load()
        except Exception as exc:  # PIL raises many types; all mean "this file is unusable"
            raise UnreadableImageError(
                f"dataset {self.name!r}: cannot read image {path} ({type(exc).__name__}: {exc}); {self.unreadable_fix}"
            ) from None
        if self.transform is None:
            import numpy as np

            return torch.from_numpy(np.asarray(im, dtype="uint8").copy()).permute(2, 0, 1).float() / 255.0
        return self.transform(im)

    def _load(self, j: int) -> torch.Tensor:
        try:
            return self._decode(j)
        except UnreadableImageError:
            if not self.skip_unreadable:
                raise
            self.skipped.append(str(self.path(j)))
            # Substitute the next readable item of the same class so batch shapes stay intact.
            same = [k for k in self._indices if self._labels[k] == self._labels[j] and k != j]
            for k in same:
                try:
                    return self._decode(k)
                except UnreadableImageError:
                    continue
            raise
