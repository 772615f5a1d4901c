"""A dataset given by its folder: ``folder:/abs/path`` wherever a dataset name is accepted.

The spelling is self-contained (a papermill kernel or a sweep worker rebuilds the dataset from the
string alone; nothing has to be registered first)::

    folder:/data/my_images                              a source or a cross-dataset target
    folder:/data/my_sketches?shift_of=folder:/data/my_images   a distribution shift of that source
    folder:/data/my_images?split_seed=2                 another seeded split of a flat tree

Options follow ``?`` as ``key=value`` pairs joined by ``&``: ``shift_of`` (any dataset name, a folder
or a registered one, whose classes the shift shares; the shift is then test-only) and ``split_seed``
(the seed of the split capt makes for a flat tree, default 1). The path must be absolute (``~`` is
expanded), so the same string means the same folder from any working directory.

Layouts, tried in this order:

* a CoOp split file ``split_*.json`` in the folder: ``{"train": [[path, label, classname], ...], ...}``,
  paths relative to the folder;
* ``train/``, ``val/`` (optional) and ``test/`` sub-trees, each holding one folder per class;
* one folder per class: capt splits each class itself, seeded by ``split_seed`` (CoOp's proportions:
  half for training, a fifth for validation, the rest for testing; at least one image in train and
  test). A shift is not split: every image is a test image.

Optional files beside them: ``classnames.txt`` (``<folder> <display name>`` per line; a folder it
does not name shows its folder name with ``_`` as a space) and ``templates.txt`` (one prompt template
per line, each with ``{}``; default ``a photo of a {}.``).

Everything is checked when the name is first used (in a chapter: its Settings cell, before anything
is loaded or trained), with an error that names the file and the fix. Indexing lists the folders and
the file sizes (one ``stat`` per file, no image decoded); the image check then opens each file's header
with PIL. A file whose header is sound but whose pixel data is damaged is found when it is decoded: the
run stops with an error naming it, and every result stored before is kept.

The split actually used is written as a CoOp split file under the run's outputs
(``<out_dir>/splits/folder-<name>-<fingerprint>.json``, by :func:`record_split`), never into the
user's folder; the fingerprint (file list, sizes, split, class names, templates) enters the result
keys, so an edited folder never reuses stale rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable, Optional

from .base import DEFAULT_TEMPLATES, ImageFiles
from .real import IMAGE_EXTENSIONS, _display_name
from .registry import DatasetSpec, get_spec, load_dataset, register_prefix
from .splits import SPLIT_NAMES, SplitFileError, classnames_from_split, read_split, write_split

PREFIX = "folder:"
OPTIONS = ("shift_of", "split_seed")
# CoOp's read_and_split_data proportions for a dataset without official splits
TRAIN_FRACTION, VAL_FRACTION = 0.5, 0.2
CLASSNAMES_FILE, TEMPLATES_FILE = "classnames.txt", "templates.txt"


class FolderError(ValueError):
    """A user's dataset folder that capt cannot use; the message names the file and the fix."""


@dataclass(frozen=True)
class FolderRef:
    """What a ``folder:`` name says: the folder, and its options."""

    name: str
    path: Path
    shift_of: Optional[str] = None
    split_seed: Optional[int] = None  # None: 1 (given only where capt splits a flat tree)

    @property
    def role(self) -> str:
        return "shift" if self.shift_of else "target"


def is_folder(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def parse(name: str) -> FolderRef:
    """Read a ``folder:PATH[?key=value&...]`` name (no file is touched)."""
    body = name[len(PREFIX):]
    where, _, query = body.partition("?")
    options = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if key not in OPTIONS or not eq or not value:
            choices = ", ".join(o + "=..." for o in OPTIONS)
            raise FolderError(f"dataset {name!r}: option {part!r} is not one of {choices}; "
                              "write e.g. folder:/data/sketches?shift_of=folder:/data/photos")
        options[key] = value
    path = Path(os.path.expanduser(where))
    if not where or not path.is_absolute():
        raise FolderError(f"dataset {name!r}: a folder dataset needs an absolute path, e.g. "
                          f"folder:/home/you/{where or 'my_images'} or folder:~/{where or 'my_images'}")
    seed = options.get("split_seed")
    if seed is not None and not seed.isdigit():
        raise FolderError(f"dataset {name!r}: split_seed must be a non-negative integer, got {seed!r}")
    return FolderRef(name, path, options.get("shift_of"), None if seed is None else int(seed))


# -- indexing: folders and sizes, no image decoded ----------------------------------------------------
@dataclass(frozen=True)
class FolderIndex:
    """The dataset a folder holds: class folders, display names, templates and each split's files."""

    ref: FolderRef
    layout: str                      # "split_file", "subtrees", "flat"
    classnames: tuple[str, ...]      # display names, index = label
    templates: tuple[str, ...]
    splits: dict                     # split -> tuple of (relative path, label, size in bytes)

    def fingerprint(self, split: str) -> str:
        """sha256 of what a split is made of: class names, templates, and its files with sizes."""
        return self._fingerprints[split]

    @cached_property
    def _fingerprints(self) -> dict[str, str]:  # every use of the name asks: hash each split once
        return {split: hashlib.sha256(json.dumps(
                    {"classnames": self.classnames, "templates": self.templates, "split": split, "files": files},
                    separators=(",", ":")).encode()).hexdigest()
                for split, files in self.splits.items()}

    def counts(self, split: str) -> list[int]:
        n = [0] * len(self.classnames)
        for _, label, _ in self.splits[split]:
            n[label] += 1
        return n


def _fail(where, problem: str, fix: str) -> FolderError:
    return FolderError(f"{where}: {problem}; {fix}")


def _scan_class(folder: Path) -> list[tuple[str, int]]:
    """(file name, size) of the images directly inside one class folder; anything else is an error."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith("."):
                continue  # .DS_Store and friends
            if e.is_dir():
                raise _fail(Path(e.path), "a folder inside a class folder",
                            "capt reads the images directly inside each class folder: move them up or delete it")
            if not e.name.lower().endswith(IMAGE_EXTENSIONS):
                raise _fail(Path(e.path), "not an image file", "move it out of the class folder or delete it "
                            f"(image files end in {', '.join(IMAGE_EXTENSIONS)})")
            out.append((e.name, e.stat().st_size))
    out.sort()
    return out


def _class_tree(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """class folder -> its images, for a folder of class folders."""
    if not folder.is_dir():
        raise _fail(folder, "no such folder", "check the path (a folder dataset is written folder:/abs/path)")
    classes = {}
    with os.scandir(folder) as it:
        entries = sorted((e.name, e.is_dir()) for e in it if not e.name.startswith("."))
    for name, is_dir in entries:
        if is_dir:
            classes[name] = _scan_class(folder / name)
        elif name.lower().endswith(IMAGE_EXTENSIONS):
            raise _fail(folder / name, "an image outside any class folder",
                        "put every image into the folder of its class")
    if not classes:
        raise _fail(folder, "no class folders", "make one sub-folder per class holding its images")
    for name, files in classes.items():
        if not files:
            raise _fail(folder / name, "an empty class folder", "add images of this class or delete the folder")
    return classes


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _display_names(root: Path, folders: list[str]) -> list[str]:
    path = root / CLASSNAMES_FILE
    given = {}
    if path.is_file():
        for i, line in enumerate(_read_lines(path), 1):
            folder, _, display = line.partition(" ")
            if not display.strip():
                raise _fail(path, f"line {i} ({line!r}) has no display name",
                            "write '<folder> <display name>' on each line")
            if folder not in folders:
                raise _fail(path, f"line {i} names folder {folder!r}, which is not a class folder",
                            f"use one of {', '.join(folders[:5])}{', ...' if len(folders) > 5 else ''}")
            given[folder] = display.strip()
    names = [given.get(f, _display_name(f)) for f in folders]
    seen: dict[str, str] = {}
    for folder, display in zip(folders, names):
        other = seen.setdefault(display.lower(), folder)
        if other != folder:
            raise _fail(path if path.is_file() else root,
                        f"class folders {other!r} and {folder!r} have the same display name {display!r}",
                        f"give one of them another name in {CLASSNAMES_FILE} ('<folder> <display name>')")
    return names


def _templates(root: Path) -> tuple[str, ...]:
    path = root / TEMPLATES_FILE
    if not path.is_file():
        return tuple(DEFAULT_TEMPLATES)
    lines = _read_lines(path)
    bad = [t for t in lines if t.count("{}") != 1]
    if not lines or bad:
        raise _fail(path, f"template {bad[0]!r} does not hold exactly one '{{}}'" if bad else "no templates",
                    "write one template per line with {} where the class name goes, e.g. 'a photo of a {}.'")
    return tuple(lines)


def _split_flat(root: Path, classes: dict, seed: int, shift: bool) -> dict[str, list[tuple[str, int, int]]]:
    """A seeded split of every class (CoOp's proportions); a shift keeps everything as test."""
    if shift:
        return {"test": [(f"{c}/{f}", y, s) for y, c in enumerate(classes) for f, s in classes[c]]}
    out = {k: [] for k in SPLIT_NAMES}
    for y, (c, files) in enumerate(classes.items()):
        if len(files) < 2:
            raise _fail(root / c, f"only {len(files)} image, too few to split into train and test",
                        "add images (at least 2 per class), or give train/ and test/ folders")
        order = list(files)
        random.Random(f"{seed}:{c}").shuffle(order)
        n_train = max(1, round(len(order) * TRAIN_FRACTION))
        n_val = min(round(len(order) * VAL_FRACTION), len(order) - n_train - 1)
        parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        for split, items in parts.items():
            out[split] += sorted((f"{c}/{f}", y, s) for f, s in items)
    return out


def _from_split_file(root: Path, path: Path) -> tuple[list[str], dict]:
    try:
        split = read_split(path)
    except SplitFileError as exc:
        raise FolderError(f"{exc}; fix it or delete it to let capt read the class folders") from None
    names = classnames_from_split(split, str(path))
    out = {}
    for part, entries in split.items():
        rows = []
        for rel, label, _ in entries:
            try:
                size = (root / rel).stat().st_size
            except OSError:
                raise _fail(path, f"{part} names {rel!r}, which is not in {root}",
                            "fix the split file or restore the image") from None
            if not rel.lower().endswith(IMAGE_EXTENSIONS):
                raise _fail(root / rel, "not an image file", "name only image files in the split file")
            rows.append((rel, label, size))
        out[part] = rows
    return [_display_name(n) for n in names], out


def _check_same_classes(where: Path, trees: dict[str, list[str]]) -> None:
    first_split, first = next(iter(trees.items()))
    for split, classes in trees.items():
        if classes != first:
            only_a = sorted(set(first) - set(classes))
            only_b = sorted(set(classes) - set(first))
            raise _fail(where, f"{split}/ and {first_split}/ hold different class folders (only in {first_split}/: "
                        f"{only_a or 'none'}; only in {split}/: {only_b or 'none'})",
                        "every split needs the same class folders")


def build_index(ref: FolderRef) -> FolderIndex:
    """Index a folder (lists and sizes only), checking its layout; errors name the file and the fix."""
    root = ref.path
    if not root.is_dir():
        raise _fail(root, "no such folder", "check the path (a folder dataset is written folder:/abs/path)")
    split_files = sorted(root.glob("split_*.json"))
    if len(split_files) > 1:
        raise _fail(root, f"{len(split_files)} split files ({', '.join(p.name for p in split_files)})",
                    "keep one split_*.json")
    subtrees = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    if split_files:
        layout = "split_file"
        classnames, splits = _from_split_file(root, split_files[0])
    elif subtrees:
        layout = "subtrees"
        need = ("test",) if ref.shift_of else ("train", "test")
        missing = [s for s in need if s not in subtrees]
        if missing:
            raise _fail(root, f"a {'/'.join(subtrees)}/ sub-tree but no {'/'.join(missing)}/",
                        f"give {' and '.join(s + '/' for s in need)} folders of class folders, or one folder "
                        "of class folders that capt splits itself")
        trees = {s: _class_tree(root / s) for s in subtrees}
        _check_same_classes(root, {s: list(t) for s, t in trees.items()})
        folders = list(trees[subtrees[0]])
        classnames = _display_names(root, folders)
        splits = {s: [(f"{s}/{c}/{f}", y, size) for y, c in enumerate(folders) for f, size in trees[s][c]]
                  for s in subtrees}
    else:
        layout = "flat"
        classes = _class_tree(root)
        classnames = _display_names(root, list(classes))
        splits = _split_flat(root, classes, 1 if ref.split_seed is None else ref.split_seed, bool(ref.shift_of))
    if ref.split_seed is not None and (layout != "flat" or ref.shift_of):
        raise _fail(ref.name, "split_seed is given, but capt splits nothing here (the folder has its own split, "
                    "or is a shift)", "remove ?split_seed=...")
    if len(classnames) < 2:
        raise _fail(root, f"only one class ({classnames[0]!r})",
                    "a classifier needs at least two class folders")
    if not ref.shift_of:
        for split in ("train", "test"):
            if split not in splits:
                raise _fail(root, f"no {split} split", f"give the split file a {split!r} list")
    for split, rows in splits.items():
        present = {y for _, y, _ in rows}
        if split != "val" and len(present) < len(classnames):
            lost = [classnames[y] for y in range(len(classnames)) if y not in present]
            raise _fail(root, f"the {split} split has no image of class {lost[0]!r}",
                        "every class needs images in every split")
    frozen = {s: tuple(tuple(r) for r in rows) for s, rows in splits.items()}
    return FolderIndex(ref, layout, tuple(classnames), _templates(root), frozen)


def _signature(ref: FolderRef) -> tuple:
    """The folder's directories (the root, its split and class folders) with their modification times,
    and those of its optional files: an added, removed or renamed file changes it, and no class folder's
    files are listed or stat-ed, so an index cached against it costs little to check."""
    out, level = [], [ref.path]
    for depth in range(3):
        below = []
        for d in level:
            try:
                out.append((str(d), d.stat().st_mtime_ns))
                if depth == 0 or (depth == 1 and d.name in SPLIT_NAMES):  # a class folder holds only images
                    with os.scandir(d) as it:
                        below += [Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir()]
            except OSError:
                out.append((str(d), None))
        level = below
    for extra in (CLASSNAMES_FILE, TEMPLATES_FILE, *sorted(p.name for p in ref.path.glob("split_*.json"))):
        p = ref.path / extra
        if p.is_file():
            st = p.stat()
            out.append((str(p), (st.st_mtime_ns, st.st_size)))
    return tuple(sorted(out, key=str))


@lru_cache(maxsize=64)
def _index_at(ref: FolderRef, signature: tuple) -> FolderIndex:
    return build_index(ref)


def folder_index(name: str) -> FolderIndex:
    """The checked index of ``folder:`` dataset ``name`` (cached while its folders are unchanged)."""
    ref = parse(name)
    index = _index_at(ref, _signature(ref))
    _check_images(index)
    if ref.shift_of:
        _check_shift(index)
    return index


# -- the image check: every file's header opens ------------------------------------------------------
_VERIFIED: set[tuple[str, str]] = set()


def _check_images(index: FolderIndex) -> None:
    from PIL import Image

    token = (str(index.ref.path), "".join(index.fingerprint(s) for s in index.splits))
    if token in _VERIFIED:
        return
    for split, rows in index.splits.items():
        for rel, _, size in rows:
            path = index.ref.path / rel
            try:
                if size == 0:
                    raise OSError("the file is empty")
                with Image.open(path) as im:
                    im.verify()
            except Exception as exc:  # PIL raises many types; all mean "not a usable image"
                raise _fail(path, f"not a readable image ({type(exc).__name__}: {exc})",
                            "replace it with a good copy or delete it") from None
    _VERIFIED.add(token)


def _classnames_of(name: str) -> tuple[str, ...]:
    return folder_index(name).classnames if is_folder(name) else _registered_classnames(name)


@lru_cache(maxsize=None)
def _registered_classnames(name: str) -> tuple[str, ...]:
    """A registered dataset's classes (fixed by its code or download: read once per process)."""
    return tuple(load_dataset(name, get_spec(name).splits[-1]).classnames)


def _check_shift(index: FolderIndex) -> None:
    source = index.ref.shift_of
    if source.partition("?")[0] == index.ref.name.partition("?")[0]:
        raise _fail(index.ref.name, "a shift of itself", "name the source folder in shift_of")
    known = {c.lower() for c in _classnames_of(source)}
    extra = [c for c in index.classnames if c.lower() not in known]
    if extra:
        raise _fail(index.ref.path, f"classes {extra[:5]} are not classes of its source {source!r}",
                    "a shift uses its source's class names: rename the folders, or map them in "
                    f"{CLASSNAMES_FILE}")


def check_shots(name: str, shots) -> None:
    """Enough training images per class for every counted shot (``all`` takes what there is)."""
    index = folder_index(name)
    counted = [k for k in shots if k != "all"]
    if not counted or "train" not in index.splits:
        return
    need = max(counted)
    counts = index.counts("train")
    short = [(index.classnames[y], n) for y, n in enumerate(counts) if n < need]
    if short:
        cls, n = short[0]
        raise _fail(index.ref.path, f"shots={need} asked, but class {cls!r} has only {n} training image"
                    f"{'s' if n != 1 else ''} ({len(short)} class{'es' if len(short) > 1 else ''} short)",
                    f"use shots <= {min(counts)}, or add images to the class folders")


# -- the dataset, as the rest of capt sees it ---------------------------------------------------------
class FolderImages(ImageFiles):
    """A folder split's images; an image that cannot be decoded is an error naming the file."""

    unreadable_fix = "replace it with a good copy or delete it, then re-run: the results stored so far are kept"


def load(name: str, split: str, transform: Callable | None = None) -> FolderImages:
    index = folder_index(name)
    if split not in index.splits:
        raise FolderError(f"dataset {name!r} has no split {split!r}; valid choices: {', '.join(index.splits)}")
    rows = index.splits[split]
    return FolderImages(name, index.ref.path, [r[0] for r in rows], [r[1] for r in rows], index.classnames,
                        templates=index.templates, transform=transform)


def split_file_name(name: str) -> str:
    index = folder_index(name)
    short = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in index.ref.path.name) or "root"
    digest = hashlib.sha256("".join(index.fingerprint(s) for s in index.splits).encode()).hexdigest()[:12]
    return f"folder-{short}-{digest}.json"


def record_split(name: str, out_dir: str | os.PathLike) -> Path:
    """Write the split in use as a CoOp split file under ``out_dir`` (never into the user's folder)."""
    index = folder_index(name)
    path = Path(out_dir) / split_file_name(name)
    if not path.exists():
        write_split(path, {s: [(rel, y, index.classnames[y]) for rel, y, _ in rows]
                           for s, rows in index.splits.items()})
    return path


def spec(name: str):
    """The registry entry of a ``folder:`` name (built on demand: nothing needs registering)."""
    index = folder_index(name)
    return DatasetSpec(
        name=name, kind="folder", role=index.ref.role,
        build=lambda split, root, transform: load(name, split, transform),
        description=f"images in {index.ref.path} ({index.layout} layout, {len(index.classnames)} classes)",
        shift_of=index.ref.shift_of, templates=index.templates,
        splits=tuple(s for s in SPLIT_NAMES if s in index.splits),
        fingerprint=lambda split: folder_index(name).fingerprint(split),
        record=lambda out_dir: record_split(name, out_dir),
        check_shots=lambda shots: check_shots(name, shots),
    )


register_prefix(PREFIX, spec)
