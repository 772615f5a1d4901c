"""Tiny on-disk copies of the real datasets' layouts (CoOp's DATASETS.md), built by the tests themselves.

Every image is a few pixels of one colour, so a whole fixture is written in milliseconds.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

from PIL import Image

# Four real ImageNet classes, in WordNet-id order as in CoOp's classnames.txt.
IMAGENET_CLASSES = [
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"),
]


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (6, 5)) -> Path:
    """A small solid-colour image; JPEG or PNG after the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value % 256, (value * 7) % 256, (value * 13) % 256)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", size, colour).save(path, fmt)
    return path


def write_classnames(path: Path, classes=IMAGENET_CLASSES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} {n}\n" for w, n in classes), encoding="utf-8")
    return path


def make_imagenet(root: Path, train_per_class: int = 5, val_per_class: int = 2, classes=IMAGENET_CLASSES) -> Path:
    """``root/imagenet/images/{train,val}/<wnid>/*.JPEG`` + ``root/imagenet/classnames.txt``."""
    base = root / "imagenet"
    write_classnames(base / "classnames.txt", classes)
    for c, (wnid, _) in enumerate(classes):
        for i in range(train_per_class):
            write_image(base / "images" / "train" / wnid / f"{wnid}_{i}.JPEG", 10 * c + i)
        for i in range(val_per_class):
            write_image(base / "images" / "val" / wnid / f"ILSVRC2012_val_{c:04d}{i:04d}.JPEG", 100 + 10 * c + i)
    (base / "images" / "train" / ".DS_Store").write_bytes(b"")   # hidden files are ignored
    return base


def make_shift(root: Path, name: str, wnids=None, per_class: int = 3, own_classnames: bool = False) -> Path:
    """ImageNet-A/-R (a subset of WordNet-id folders), -Sketch (``images/<wnid>``) or -V2 (``<label>/``)."""
    folder, image_dir = {
        "imagenet_a": ("imagenet-adversarial", "imagenet-a"),
        "imagenet_r": ("imagenet-rendition", "imagenet-r"),
        "imagenet_sketch": ("imagenet-sketch", "images"),
        "imagenet_v2": ("imagenetv2", "imagenetv2-matched-frequency-format-val"),
    }[name]
    base = root / folder
    all_wnids = [w for w, _ in IMAGENET_CLASSES]
    wnids = all_wnids if wnids is None else wnids
    for wnid in wnids:
        sub = str(all_wnids.index(wnid)) if name == "imagenet_v2" else wnid
        for i in range(per_class):
            write_image(base / image_dir / sub / f"{i}.jpg", 50 + i)
    if name == "imagenet_a":
        (base / image_dir / "README.txt").write_text("ImageNet-A\n")
    if own_classnames:
        write_classnames(base / "classnames.txt")
    return base


def make_split_dataset(root: Path, folder: str, image_dir: str, split_file: str, classes: list[str],
                       counts=(3, 2, 2), path_of=None) -> dict:
    """A CoOp split-file dataset: images under ``folder/image_dir`` and ``folder/split_file``.

    ``path_of(classname, split, i)`` gives an image's path relative to the image folder
    (default ``<class>/<class>_<split>_<i>.jpg``). Returns the split dict written.
    """
    base = root / folder
    path_of = path_of or (lambda c, s, i: f"{c}/{c}_{s}_{i}.jpg")
    split = {}
    for part, n in zip(("train", "val", "test"), counts):
        entries = []
        for label, cname in enumerate(classes):
            for i in range(n):
                rel = path_of(cname, part, i)
                write_image(base / image_dir / rel if image_dir else base / rel, label * 20 + i)
                entries.append([rel, label, cname])
        split[part] = entries
    (base / split_file).write_text(json.dumps(split), encoding="utf-8")
    return split


EUROSAT_CLASSES = ["Annual Crop Land", "Forest", "Sea or Lake"]
PETS_CLASSES = ["abyssinian", "american_bulldog", "basset_hound"]


def make_eurosat(root: Path, counts=(3, 2, 2)) -> dict:
    return make_split_dataset(root, "eurosat", "2750", "split_zhou_EuroSAT.json", EUROSAT_CLASSES, counts,
                              path_of=lambda c, s, i: f"{c.replace(' ', '')}/{c.replace(' ', '')}_{s}{i}.jpg")


def make_pets(root: Path, counts=(4, 1, 2)) -> dict:
    """Oxford Pets keeps every image in one flat folder, ``images/<Breed>_<n>.jpg``."""
    return make_split_dataset(root, "oxford_pets", "images", "split_zhou_OxfordPets.json", PETS_CLASSES, counts,
                              path_of=lambda c, s, i: f"{c.title()}_{s}{i}.jpg")


def make_aircraft(root: Path, variants=("707-320", "A300B4", "Cessna 172"), counts=(2, 1, 1),
                  first_id: int = 1000000) -> Path:
    """FGVC-Aircraft's layout: variants.txt and images_variant_<split>.txt ("<id> <variant>" lines)."""
    base = root / "fgvc_aircraft"
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    image_id = first_id
    for part, n in zip(("train", "val", "test"), counts):
        lines = []
        for v in variants:
            for _ in range(n):
                image_id += 1
                write_image(base / "images" / f"{image_id}.jpg", image_id % 200)
                lines.append(f"{image_id} {v}")
        (base / f"images_variant_{part}.txt").write_text("\n".join(lines) + "\n")
    return base


# -- archives ------------------------------------------------------------------------------------
def jpeg_bytes(value: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (value, value, value)).save(buf, "JPEG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# -- all fifteen datasets at once: a miniature of a whole CoOp data root ----------------------------
# (folder, image folder, split file, path of an image relative to the image folder) per split-file dataset,
# as CoOp's DATASETS.md lays them out.
_SPLIT_LAYOUTS = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                   lambda c, s, i: f"{c}/image_{s}{i:04d}.jpg", ["accordion", "airplane"]),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json",
                    lambda c, s, i: f"{c.title()}_{s}{i}.jpg", PETS_CLASSES[:2]),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json",
                      lambda c, s, i: f"{'cars_test' if s == 'test' else 'cars_train'}/{c[:4]}{s}{i:05d}.jpg",
                      ["2000 AM General Hummer SUV", "2012 Acura RL Sedan"]),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                       lambda c, s, i: f"image_{c[:3]}{s}{i:05d}.jpg", ["pink primrose", "globe thistle"]),
    "food101": ("food-101", "images", "split_zhou_Food101.json",
                lambda c, s, i: f"{c}/{s}{i}.jpg", ["apple_pie", "baby_back_ribs"]),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json",
               lambda c, s, i: f"{c[0]}/{c}/sun_{s}{i}.jpg", ["abbey", "airplane_cabin"]),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json",
            lambda c, s, i: f"{c}/{c}_{s}{i}.jpg", ["banded", "blotchy"]),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json",
                lambda c, s, i: f"{c.replace(' ', '')}/{c.replace(' ', '')}_{s}{i}.jpg", EUROSAT_CLASSES[:2]),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
               lambda c, s, i: f"{c}/v_{c}_g{i:02d}_{s}.jpg", ["Apply_Eye_Makeup", "Archery"]),
}


def make_coop_root(root: Path, counts=(2, 1, 2)) -> dict[str, int]:
    """Every one of the fifteen datasets in CoOp's layout under ``root``, two classes each (two ImageNet
    classes, all of which the four variants cover); ``counts`` images per class for train/val/test.
    Returns the number of classes per dataset."""
    root = Path(root)
    for name, (folder, image_dir, split_file, path_of, classes) in _SPLIT_LAYOUTS.items():
        make_split_dataset(root, folder, image_dir, split_file, classes, counts, path_of=path_of)
    make_aircraft(root, variants=("707-320", "A300B4"), counts=counts, first_id=2000000)
    classes = IMAGENET_CLASSES[:2]
    # ImageNet's train folders: its own val split holds out half of a class at most, so 2 * train.
    make_imagenet(root, train_per_class=2 * counts[0], val_per_class=counts[2], classes=classes)
    for shift in ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"):
        make_shift(root, shift, wnids=[w for w, _ in classes], per_class=counts[2])
    return {name: 2 for name in (*_SPLIT_LAYOUTS, "fgvc_aircraft", "imagenet", "imagenet_v2", "imagenet_sketch",
                                 "imagenet_a", "imagenet_r")}
