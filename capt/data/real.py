"""The fifteen real datasets of the protocol, laid out and read exactly as in CoOp's DATASETS.md.

Every dataset lives in its own folder under one data root (``$DATA``; here ``root``, by default the
environment variable ``CAPT_DATA`` or ``./data``)::

    imagenet/images/{train,val}/<wnid>/*.JPEG + imagenet/classnames.txt   ("<wnid> <name>" per line)
    caltech-101/101_ObjectCategories/ + split_zhou_Caltech101.json
    oxford_pets/images/ + split_zhou_OxfordPets.json
    stanford_cars/{cars_train,cars_test}/ + split_zhou_StanfordCars.json    (paths relative to the folder)
    oxford_flowers/jpg/ + split_zhou_OxfordFlowers.json
    food-101/images/ + split_zhou_Food101.json
    fgvc_aircraft/images/ + variants.txt + images_variant_{train,val,test}.txt
    sun397/SUN397/ + split_zhou_SUN397.json
    dtd/images/ + split_zhou_DescribableTextures.json
    eurosat/2750/ + split_zhou_EuroSAT.json
    ucf101/UCF-101-midframes/ + split_zhou_UCF101.json
    imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/
    imagenet-sketch/images/<wnid>/
    imagenet-adversarial/imagenet-a/<wnid>/      (200 of ImageNet's classes)
    imagenet-rendition/imagenet-r/<wnid>/        (200 of ImageNet's classes)

Conventions shared with the prompt-learning literature (CoOp, CoCoOp, MaPLe, APT, FAP):

* class names come from the split file's third column (ImageNet and its shifts: ``classnames.txt``,
  the CLIP-cleaned names), with ``_`` shown as a space, as CoOp's prompt learners do;
* one hand-crafted template per dataset, CoOp's zero-shot template;
* ImageNet's test split is its official validation set; its ``val`` split is this project's own
  held-out part of the training folders (see :data:`IMAGENET_VAL_PER_CLASS`);
* the shifts are test-only and use ImageNet's class names and template. ImageNet-A and -R cover 200
  classes: the class list is derived from the WordNet-id folders present on disk, labels run 0..199
  in sorted-wnid order (as in CoOp), and ``dataset.source_classes[i]`` is the ImageNet label of
  class ``i`` (for a 1000-way evaluation with the other classes masked out).

Keys (``dataset.keys``) are the image paths relative to the dataset's image folder, so a few-shot
split written on one machine names the same images on another.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from .base import ImageFiles, LabeledImages
from .registry import DatasetSpec, get_spec, register
from .splits import (
    DatasetNotReady,
    MissingImagesError,
    SplitFileError,
    classnames_from_split,
    find_missing,
    read_split,
)

__all__ = [
    "DatasetNotReady", "MissingImagesError", "REAL_DATASETS", "RealDataset", "IMAGENET_VAL_PER_CLASS",
    "IMAGE_EXTENSIONS", "default_data_root", "read_imagenet_classnames",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: Images per class held out of ``imagenet/images/train`` as ImageNet's ``val`` split (at most half
#: of a class). Chosen by the lowest ``sha256("imagenet-val:" + key)``; CoOp itself has no ImageNet
#: val split (it validates on the test set), so this choice is ours.
IMAGENET_VAL_PER_CLASS = 5

_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class RealDataset:
    """Where one real dataset lives and how it is read; the registry entry is built from this."""

    name: str
    title: str                       # the name in papers and in CoOp's code
    folder: str                      # under the data root
    image_dir: str                   # under ``folder``; split paths are relative to it ("" = the folder)
    reader: str                      # "split_file", "aircraft", "imagenet", "imagenet_shift"
    template: str
    role: str = "target"
    split_file: Optional[str] = None
    n_classes: int = 0
    expected: dict = field(default_factory=dict)   # image counts per split in CoOp's table
    shift_of: Optional[str] = None
    description: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("test",) if self.role == "shift" else ("train", "val", "test")

    def folder_path(self, root: str | os.PathLike | None = None) -> Path:
        return resolve_root(root) / self.folder


def _split_ds(name, title, folder, image_dir, split_file, template, n, counts, description):
    return RealDataset(name=name, title=title, folder=folder, image_dir=image_dir, reader="split_file",
                       template=template, split_file=split_file, n_classes=n,
                       expected=dict(zip(("train", "val", "test"), counts)), description=description)


REAL_DATASETS: dict[str, RealDataset] = {d.name: d for d in [
    RealDataset("imagenet", "ImageNet", "imagenet", "images", "imagenet", "a photo of a {}.", role="source",
                n_classes=1000, expected={"train": 1281167 - 5000, "val": 5000, "test": 50000},
                description="ILSVRC-2012, 1000 classes; source of the cross-dataset and shift settings"),
    _split_ds("caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
              "a photo of a {}.", 100, (4128, 1649, 2465), "generic objects, 100 classes"),
    _split_ds("oxford_pets", "OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json",
              "a photo of a {}, a type of pet.", 37, (2944, 736, 3669), "cat and dog breeds"),
    _split_ds("stanford_cars", "StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json",
              "a photo of a {}.", 196, (6509, 1635, 8041), "car make, model and year"),
    _split_ds("oxford_flowers", "OxfordFlowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
              "a photo of a {}, a type of flower.", 102, (4093, 1633, 2463), "flower species (Flowers102)"),
    _split_ds("food101", "Food101", "food-101", "images", "split_zhou_Food101.json",
              "a photo of {}, a type of food.", 101, (50500, 20200, 30300), "dishes"),
    RealDataset("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", "images", "aircraft",
                "a photo of a {}, a type of aircraft.", n_classes=100,
                expected={"train": 3334, "val": 3333, "test": 3333},
                description="aircraft variants; the official train/val/test lists"),
    _split_ds("sun397", "SUN397", "sun397", "SUN397", "split_zhou_SUN397.json",
              "a photo of a {}.", 397, (15880, 3970, 19850), "scene categories"),
    _split_ds("dtd", "DescribableTextures", "dtd", "images", "split_zhou_DescribableTextures.json",
              "{} texture.", 47, (2820, 1128, 1692), "describable textures (DTD)"),
    _split_ds("eurosat", "EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json",
              "a centered satellite photo of {}.", 10, (13500, 5400, 8100), "Sentinel-2 land use, RGB"),
    _split_ds("ucf101", "UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
              "a photo of a person doing {}.", 101, (7639, 1898, 3783), "actions, the middle frame of each video"),
    RealDataset("imagenet_v2", "ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val",
                "imagenet_shift", "a photo of a {}.", role="shift", n_classes=1000, expected={"test": 10000},
                shift_of="imagenet", description="ImageNetV2 matched-frequency: a new test set for ImageNet"),
    RealDataset("imagenet_sketch", "ImageNetSketch", "imagenet-sketch", "images", "imagenet_shift",
                "a photo of a {}.", role="shift", n_classes=1000, expected={"test": 50889}, shift_of="imagenet",
                description="black-and-white sketches of ImageNet's classes"),
    RealDataset("imagenet_a", "ImageNetA", "imagenet-adversarial", "imagenet-a", "imagenet_shift",
                "a photo of a {}.", role="shift", n_classes=200, expected={"test": 7500}, shift_of="imagenet",
                description="natural adversarial examples, 200 ImageNet classes"),
    RealDataset("imagenet_r", "ImageNetR", "imagenet-rendition", "imagenet-r", "imagenet_shift",
                "a photo of a {}.", role="shift", n_classes=200, expected={"test": 30000}, shift_of="imagenet",
                description="renditions (art, cartoons, ...), 200 ImageNet classes"),
]}


# -- roots and small helpers ---------------------------------------------------------------------
def default_data_root() -> Path:
    """``$CAPT_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("CAPT_DATA") or "data")


def resolve_root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root()


def _not_ready(info: RealDataset, path, problem: str, root, hint: str | None = None) -> DatasetNotReady:
    return DatasetNotReady(info.name, path, problem, root=resolve_root(root), hint=hint)


def _display_name(name: str) -> str:
    return name.replace("_", " ").strip()


def _list_images(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_file()
                      and e.name.lower().endswith(IMAGE_EXTENSIONS))


def _list_dirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def _check_folder(info: RealDataset, root) -> Path:
    base = resolve_root(root)
    if not base.is_dir():
        raise _not_ready(info, base, "the data root does not exist", root,
                         hint="Set --root or the environment variable CAPT_DATA to your data folder")
    folder = base / info.folder
    if not folder.is_dir():
        raise _not_ready(info, folder, f"folder {info.folder!r} is missing", root)
    return folder


def _check_dir(info, path: Path, what: str, root) -> Path:
    if not path.is_dir():
        raise _not_ready(info, path, f"{what} is missing", root)
    return path


def _files(info, image_root, paths, labels, classnames, transform, listing, root) -> ImageFiles:
    """The images named by a split file or list, after checking that every one is on disk."""
    missing = find_missing(image_root, paths)
    if missing:
        raise MissingImagesError(info.name, [image_root / m for m in missing], len(paths), listing, root=root)
    return ImageFiles(info.name, image_root, paths, labels, classnames, templates=(info.template,),
                      transform=transform)


# -- readers -------------------------------------------------------------------------------------
def _read_split_file(info: RealDataset, split: str, root, transform) -> LabeledImages:
    folder = _check_folder(info, root)
    split_path = folder / info.split_file
    if not split_path.is_file():
        raise _not_ready(info, split_path, f"split file {info.split_file} is missing", root)
    image_root = _check_dir(info, folder / info.image_dir if info.image_dir else folder,
                            f"image folder {info.image_dir or info.folder!r}", root)
    try:
        data = read_split(split_path)
        classnames = classnames_from_split(data, source=str(split_path))
    except SplitFileError as exc:
        raise _not_ready(info, split_path, f"the split file is unusable: {exc}", root) from None
    if split not in data:
        raise _not_ready(info, split_path, f"the split file has no {split!r} part", root)
    entries = data[split]
    paths = [p for p, _, _ in entries]
    labels = [y for _, y, _ in entries]
    return _files(info, image_root, paths, labels, [_display_name(c) for c in classnames], transform,
                  split_path, root)


def _read_aircraft(info: RealDataset, split: str, root, transform) -> LabeledImages:
    folder = _check_folder(info, root)
    variants = folder / "variants.txt"
    if not variants.is_file():
        raise _not_ready(info, variants, "variants.txt is missing", root)
    classnames = [line.strip() for line in variants.read_text(encoding="utf-8").splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classnames)}
    listing = folder / f"images_variant_{split}.txt"
    if not listing.is_file():
        raise _not_ready(info, listing, f"{listing.name} is missing", root)
    image_root = _check_dir(info, folder / info.image_dir, "image folder 'images'", root)
    paths, labels = [], []
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        image_id, _, variant = line.partition(" ")
        if variant not in index:
            raise _not_ready(info, listing, f"line {n} names variant {variant!r}, which is not in variants.txt", root)
        paths.append(f"{image_id}.jpg")
        labels.append(index[variant])
    return _files(info, image_root, paths, labels, classnames, transform, listing, root)


def read_imagenet_classnames(path: str | os.PathLike) -> dict[str, str]:
    """``classnames.txt`` as CoOp ships it: one ``<wnid> <class name>`` per line, in label order."""
    names: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        wnid, _, name = line.partition(" ")
        if not _WNID.match(wnid) or not name.strip():
            raise ValueError(f"{path}: line {n} is not '<wnid> <class name>': {line!r}")
        if wnid in names:
            raise ValueError(f"{path}: WordNet id {wnid} appears twice (line {n})")
        names[wnid] = name.strip()
    if not names:
        raise ValueError(f"{path} is empty")
    return names


def _imagenet_names(info: RealDataset, root) -> dict[str, str]:
    """ImageNet's class names: the dataset's own ``classnames.txt`` copy if present, else ImageNet's."""
    base = resolve_root(root)
    candidates = [base / info.folder / "classnames.txt"]
    if info.name != "imagenet":
        candidates.append(base / REAL_DATASETS["imagenet"].folder / "classnames.txt")
    for path in candidates:
        if path.is_file():
            try:
                return read_imagenet_classnames(path)
            except ValueError as exc:
                raise _not_ready(info, path, f"classnames.txt is unusable: {exc}", root) from None
    raise DatasetNotReady(
        "imagenet", candidates[-1], f"ImageNet's classnames.txt, needed by {info.name!r}, is missing "
        f"(also looked at {candidates[0]})", root=base)


def _imagenet_split_lists(info: RealDataset, folder: Path, names: dict[str, str], sub: str, root):
    """All images of ``images/<sub>/<wnid>/`` with their labels (the line index in classnames.txt)."""
    split_dir = _check_dir(info, folder / info.image_dir / sub, f"images/{sub}", root)
    label_of = {w: i for i, w in enumerate(names)}
    per_class: dict[int, list[str]] = {}
    for wnid in _list_dirs(split_dir):
        if wnid not in label_of:
            raise _not_ready(info, split_dir / wnid, f"folder {wnid} is not a class of classnames.txt", root)
        per_class[label_of[wnid]] = [f"{sub}/{wnid}/{f}" for f in _list_images(split_dir / wnid)]
    if not per_class:
        raise _not_ready(info, split_dir, f"images/{sub} holds no class folders", root)
    return per_class


def _read_imagenet(info: RealDataset, split: str, root, transform) -> LabeledImages:
    folder = _check_folder(info, root)
    names = _imagenet_names(info, root)
    classnames = [_display_name(n) for n in names.values()]
    per_class = _imagenet_split_lists(info, folder, names, "val" if split == "test" else "train", root)
    paths, labels = [], []
    for label in sorted(per_class):
        files = per_class[label]
        if split != "test":
            held = min(IMAGENET_VAL_PER_CLASS, len(files) // 2)
            ranked = sorted(files, key=lambda k: hashlib.sha256(f"imagenet-val:{k}".encode()).hexdigest())
            chosen = set(ranked[:held])
            files = [f for f in files if (f in chosen) == (split == "val")]
        paths += files
        labels += [label] * len(files)
    image_root = folder / info.image_dir
    return ImageFiles(info.name, image_root, paths, labels, classnames, templates=(info.template,),
                      transform=transform)


def _read_imagenet_shift(info: RealDataset, split: str, root, transform) -> LabeledImages:
    folder = _check_folder(info, root)
    names = _imagenet_names(info, root)
    wnids = list(names)
    image_root = _check_dir(info, folder / info.image_dir, f"image folder {info.image_dir!r}", root)
    folders = _list_dirs(image_root)
    if not folders:
        raise _not_ready(info, image_root, "the image folder holds no class folders", root)
    paths, labels = [], []
    if info.name == "imagenet_v2":
        # Folders are named by ImageNet label, 0..999 (the order of classnames.txt).
        classes = list(range(len(wnids)))
        for sub in folders:
            if not sub.isdigit() or int(sub) >= len(wnids):
                raise _not_ready(info, image_root / sub, "expected folders named 0..999 by ImageNet label", root)
        for sub in sorted(folders, key=int):
            files = _list_images(image_root / sub)
            paths += [f"{sub}/{f}" for f in files]
            labels += [int(sub)] * len(files)
    else:
        unknown = [f for f in folders if f not in names]
        if unknown:
            raise _not_ready(info, image_root / unknown[0],
                             f"{len(unknown)} folders are not ImageNet WordNet ids of classnames.txt", root)
        if info.name == "imagenet_sketch":
            classes = list(range(len(wnids)))          # all of ImageNet's classes, ImageNet's labels
            label_of = {w: i for i, w in enumerate(wnids)}
        else:
            present = set(folders)                     # the 200-class subset: the folders on disk
            classes = [i for i, w in enumerate(wnids) if w in present]
            label_of = {wnids[c]: j for j, c in enumerate(classes)}
        for wnid in folders:
            files = _list_images(image_root / wnid)
            paths += [f"{wnid}/{f}" for f in files]
            labels += [label_of[wnid]] * len(files)
    classnames = [_display_name(names[wnids[c]]) for c in classes]
    ds = ImageFiles(info.name, image_root, paths, labels, classnames, templates=(info.template,),
                    transform=transform)
    ds.source_classes = list(classes)
    return ds


_READERS: dict[str, Callable] = {
    "split_file": _read_split_file,
    "aircraft": _read_aircraft,
    "imagenet": _read_imagenet,
    "imagenet_shift": _read_imagenet_shift,
}


def build_split(info: RealDataset, split: str, root: Optional[Path], transform: Optional[Callable]) -> LabeledImages:
    """One split of a real dataset, read by its layout's reader (what the registry's ``build`` calls)."""
    if split not in info.splits:
        raise ValueError(f"dataset {info.name!r} has no split {split!r}; valid choices: {', '.join(info.splits)}")
    ds = _READERS[info.reader](info, split, root, transform)
    ds.split = split
    ds.data_dir = resolve_root(root) / info.folder
    if not hasattr(ds, "source_classes"):
        ds.source_classes = None
    return ds


def _register_all() -> None:
    for info in REAL_DATASETS.values():
        try:
            get_spec(info.name)
            continue                                    # already registered (module re-imported)
        except ValueError:
            pass
        register(DatasetSpec(
            name=info.name, kind="real", role=info.role, build=partial(build_split, info),
            description=f"{info.title}: {info.description}", shift_of=info.shift_of,
            templates=(info.template,), splits=info.splits,
        ))


_register_all()
