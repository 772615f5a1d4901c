"""The real datasets' recipes, and ``prepare(name, root)`` that downloads, verifies and lays one out.

* :class:`Resource` is one file to fetch (mirrors, pinned hashes); a :class:`Recipe` lists a dataset's
  resources and the ``layout`` that arranges the unpacked archives; :data:`RECIPES` holds one per dataset.
* :func:`prepare` runs a dataset's recipe: download every resource, extract into a staging
  folder inside the data root, lay the files out where :mod:`capt.data.real` reads them, then move
  the result into place. Any failure removes the staging folder, so no half-written dataset is left.
* :func:`manual_steps` says what to do by hand when a dataset cannot be fetched by script.

The generic machinery (resumable, verified downloads, the manifest, safe extraction) is in
:mod:`capt.data.transfer`. Hashes: the md5 sums torchvision pins for the same archives are pinned
here; no sha256 of these archives is published, so each one's sha256 is recorded in the manifest on
the first download (trust on first use) and later downloads are verified against it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from .transfer import MANIFEST_NAME, DownloadError, Manifest, download, gdrive_url, safe_extract

__all__ = ["Resource", "Recipe", "RECIPES", "prepare", "manual_steps"]

DOWNLOADS_DIR = ".downloads"


# -- recipes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resource:
    """One file to fetch. ``urls`` are tried in order (mirrors); ``filename`` is its name on disk.

    ``extract``: an archive to unpack; otherwise the file is copied to ``dest`` (a path inside the
    dataset folder). ``copy_from``: a path under the data root to copy instead of downloading, when it
    exists (ImageNet's ``classnames.txt`` for the shift sets).
    """

    filename: str
    urls: tuple[str, ...]
    md5: Optional[str] = None
    sha256: Optional[str] = None
    extract: bool = True
    dest: Optional[str] = None
    size: str = ""
    copy_from: Optional[str] = None
    gdrive: bool = False


@dataclass(frozen=True)
class Recipe:
    """How to prepare one dataset: its resources, and ``layout(extracted, out)`` that arranges them.

    ``extracted`` maps a resource's filename to the folder its archive was unpacked in; ``out`` is the
    dataset folder being built (moved into ``<root>/<folder>`` at the end). ``manual`` is printed when
    the data cannot be fetched by a script (ImageNet), or when a download fails.
    """

    name: str
    folder: str
    resources: tuple[Resource, ...]
    layout: Optional[Callable[[dict, Path], None]] = None
    licence: str = ""
    homepage: str = ""
    manual: str = ""
    automatic: bool = True


def _find(base: Path, suffix: str, kind: str = "dir") -> Path:
    """The shallowest path under ``base`` whose trailing components equal ``suffix`` (``a/b``)."""
    want = PurePosixPath(suffix).parts
    level = [base]
    while level:
        nxt = []
        for folder in sorted(level):
            for child in sorted(folder.iterdir()):
                rel = child.relative_to(base).parts
                if rel[-len(want):] == want and (child.is_dir() if kind == "dir" else child.is_file()):
                    return child
                if child.is_dir() and not child.is_symlink():
                    nxt.append(child)
        level = nxt
    raise FileNotFoundError(f"the archive holds no {kind} {suffix!r} (looked under {base})")


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    os.replace(src, dst)


def _move_children(src: Path, dst: Path) -> None:
    for child in sorted(src.iterdir()):
        _move(child, dst / child.name)


def _layout_caltech(extracted: dict, out: Path) -> None:
    inner = _find(extracted["caltech-101.zip"], "101_ObjectCategories.tar.gz", kind="file")
    unpacked = safe_extract(inner, inner.parent / "_inner")
    _move(_find(unpacked, "101_ObjectCategories"), out / "101_ObjectCategories")


def _layout_by_map(mapping: dict[str, str]) -> Callable[[dict, Path], None]:
    """``{archive filename: "target=dir to find"}``; a target starting with ``*`` takes the contents."""
    def layout(extracted: dict, out: Path) -> None:
        for filename, spec in mapping.items():
            contents = spec.startswith("*")
            target, _, find = spec.lstrip("*").partition("=")
            found = _find(extracted[filename], find or target)
            if contents:
                _move_children(found, out)
            else:
                _move(found, out / target)
    return layout


def _layout_sketch(extracted: dict, out: Path) -> None:
    base = extracted["ImageNet-Sketch.zip"]
    try:
        found = _find(base, "sketch")
    except FileNotFoundError:
        found = _find_wnid_parent(base)
    _move(found, out / "images")


def _find_wnid_parent(base: Path) -> Path:
    import re

    wnid = re.compile(r"^n\d{8}$")
    for folder, dirs, _ in os.walk(base):
        if sum(bool(wnid.match(d)) for d in dirs) >= 100:
            return Path(folder)
    raise FileNotFoundError(f"the archive holds no folder of WordNet-id class folders (looked under {base})")


_SPLIT_IDS = {
    "caltech101": ("split_zhou_Caltech101.json", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
    "oxford_pets": ("split_zhou_OxfordPets.json", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
    "stanford_cars": ("split_zhou_StanfordCars.json", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
    "oxford_flowers": ("split_zhou_OxfordFlowers.json", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
    "food101": ("split_zhou_Food101.json", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
    "sun397": ("split_zhou_SUN397.json", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
    "dtd": ("split_zhou_DescribableTextures.json", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
    "eurosat": ("split_zhou_EuroSAT.json", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
    "ucf101": ("split_zhou_UCF101.json", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
}
IMAGENET_CLASSNAMES_ID = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"


def _split_res(name: str) -> Resource:
    filename, file_id = _SPLIT_IDS[name]
    return Resource(filename, (gdrive_url(file_id),), extract=False, dest=filename, size="< 10 MB", gdrive=True)


def _classnames_res() -> Resource:
    return Resource("classnames.txt", (gdrive_url(IMAGENET_CLASSNAMES_ID),), extract=False, dest="classnames.txt",
                    size="30 kB", copy_from="imagenet/classnames.txt", gdrive=True)


_VGG = "https://www.robots.ox.ac.uk/~vgg/data"
_IMAGENET_MANUAL = """\
ImageNet (ILSVRC-2012) needs a login; download it yourself:
  1. Register at https://image-net.org/ and accept the terms of access.
  2. Download ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar (6.3 GB).
  3. mkdir -p {root}/imagenet/images/train {root}/imagenet/images/val
  4. Train: tar -xf ILSVRC2012_img_train.tar -C {root}/imagenet/images/train, then unpack each of the
     1000 per-class tars into its own folder:
       cd {root}/imagenet/images/train && for f in n*.tar; do d=${{f%.tar}}; mkdir -p $d && tar -xf $f -C $d && rm $f; done
  5. Val: tar -xf ILSVRC2012_img_val.tar -C {root}/imagenet/images/val, then sort the 50,000 images into
     one folder per WordNet id (images/val/n01440764/ILSVRC2012_val_00000293.JPEG, ...) with the labels of
     the devkit, e.g. the widely used valprep.sh script. (If you already have ImageNet in this
     layout, symbolic links {root}/imagenet/images/train and .../val pointing at it are enough.)
  6. classnames.txt: this command downloads CoOp's file (the CLIP class names) to {root}/imagenet/;
     if that fails, get it from https://drive.google.com/file/d/{cid}/view .
  7. Check with: capt data status imagenet --root {root}
"""
_CARS_MANUAL = """\
Stanford Cars is no longer served at its original address (ai.stanford.edu/~jkrause/cars). Get the
four original files from a copy you trust (the same files CoOp's DATASETS.md lists):
  cars_train.tgz, cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat
put them in {root}/.downloads/stanford_cars/ and run this command again: it verifies, unpacks and lays
them out as {root}/stanford_cars/{{cars_train,cars_test,devkit}}, and fetches split_zhou_StanfordCars.json.
"""

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("imagenet", "imagenet", (_classnames_res(),), licence="ImageNet terms of access (non-commercial research)",
           homepage="https://image-net.org/", manual=_IMAGENET_MANUAL, automatic=False),
    Recipe("caltech101", "caltech-101", (
        Resource("caltech-101.zip", ("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",),
                 md5="3138e1922a9193bfa496528edbbc45d0", size="137 MB"),
        _split_res("caltech101")), layout=_layout_caltech, licence="CC BY 4.0",
        homepage="https://data.caltech.edu/records/mzrjq-6wc02"),
    Recipe("oxford_pets", "oxford_pets", (
        Resource("images.tar.gz", (f"{_VGG}/pets/data/images.tar.gz",), md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
                 size="792 MB"),
        Resource("annotations.tar.gz", (f"{_VGG}/pets/data/annotations.tar.gz",),
                 md5="95a8c909bbe2e81eed6a22bccdf3f68f", size="19 MB"),
        _split_res("oxford_pets")),
        layout=_layout_by_map({"images.tar.gz": "images", "annotations.tar.gz": "annotations"}),
        licence="CC BY-SA 4.0", homepage=f"{_VGG}/pets/"),
    Recipe("stanford_cars", "stanford_cars", (
        Resource("cars_train.tgz", ("http://ai.stanford.edu/~jkrause/car196/cars_train.tgz",), size="980 MB"),
        Resource("cars_test.tgz", ("http://ai.stanford.edu/~jkrause/car196/cars_test.tgz",), size="980 MB"),
        Resource("car_devkit.tgz", ("https://ai.stanford.edu/~jkrause/cars/car_devkit.tgz",), size="330 kB"),
        Resource("cars_test_annos_withlabels.mat",
                 ("http://ai.stanford.edu/~jkrause/car196/cars_test_annos_withlabels.mat",), extract=False,
                 dest="cars_test_annos_withlabels.mat", size="190 kB"),
        _split_res("stanford_cars")),
        layout=_layout_by_map({"cars_train.tgz": "cars_train", "cars_test.tgz": "cars_test",
                               "car_devkit.tgz": "devkit"}),
        licence="non-commercial research use (ImageNet-style terms)",
        homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html", manual=_CARS_MANUAL),
    Recipe("oxford_flowers", "oxford_flowers", (
        Resource("102flowers.tgz", (f"{_VGG}/flowers/102/102flowers.tgz",), md5="52808999861908f626f3c1f4e79d11fa",
                 size="345 MB"),
        Resource("imagelabels.mat", (f"{_VGG}/flowers/102/imagelabels.mat",), md5="e0620be6f572b9609742df49c70aed4d",
                 extract=False, dest="imagelabels.mat", size="1 kB"),
        Resource("cat_to_name.json", (gdrive_url("1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"),), extract=False,
                 dest="cat_to_name.json", size="3 kB", gdrive=True),
        _split_res("oxford_flowers")),
        layout=_layout_by_map({"102flowers.tgz": "jpg"}), licence="not stated (research use)",
        homepage=f"{_VGG}/flowers/102/"),
    Recipe("food101", "food-101", (
        Resource("food-101.tar.gz", ("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",),
                 md5="85eeb15f3717b99a5da872d97d918f87", size="5.0 GB"),
        _split_res("food101")),
        layout=_layout_by_map({"food-101.tar.gz": "*food-101"}),
        licence="see license_agreement.txt in the archive (images from foodspotting.com; research use)",
        homepage="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"),
    Recipe("fgvc_aircraft", "fgvc_aircraft", (
        Resource("fgvc-aircraft-2013b.tar.gz", (f"{_VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",),
                 size="2.8 GB"),),
        layout=_layout_by_map({"fgvc-aircraft-2013b.tar.gz": "*data=fgvc-aircraft-2013b/data"}),
        licence="non-commercial research use only", homepage=f"{_VGG}/fgvc-aircraft/"),
    Recipe("sun397", "sun397", (
        Resource("SUN397.tar.gz", ("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",),
                 md5="8ca2778205c41d23104230ba66911c7a", size="39 GB"),
        _split_res("sun397")),
        layout=_layout_by_map({"SUN397.tar.gz": "SUN397"}), licence="not stated (research use)",
        homepage="https://vision.princeton.edu/projects/2010/SUN/"),
    Recipe("dtd", "dtd", (
        Resource("dtd-r1.0.1.tar.gz", (f"{_VGG}/dtd/download/dtd-r1.0.1.tar.gz",),
                 md5="fff73e5086ae6bdbea199a49dfb8a4c1", size="625 MB"),
        _split_res("dtd")),
        layout=_layout_by_map({"dtd-r1.0.1.tar.gz": "*dtd"}), licence="research use (see the homepage)",
        homepage=f"{_VGG}/dtd/"),
    Recipe("eurosat", "eurosat", (
        Resource("EuroSAT.zip", (
            "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/"
            "EuroSAT.zip", "http://madm.dfki.de/files/sentinel/EuroSAT.zip"),
            md5="c8fa014336c82ac7804f0398fcb19387", size="94 MB"),
        _split_res("eurosat")),
        layout=_layout_by_map({"EuroSAT.zip": "2750"}), licence="MIT",
        homepage="https://github.com/phelber/EuroSAT"),
    Recipe("ucf101", "ucf101", (
        Resource("UCF-101-midframes.zip", (gdrive_url("10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O"),), size="about 1.8 GB",
                 gdrive=True),
        _split_res("ucf101")),
        layout=_layout_by_map({"UCF-101-midframes.zip": "UCF-101-midframes"}),
        licence="not stated (research use); middle frames extracted by CoOp's authors",
        homepage="https://www.crcv.ucf.edu/data/UCF101.php"),
    Recipe("imagenet_v2", "imagenetv2", (
        Resource("imagenetv2-matched-frequency.tar.gz", (
            "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
            "https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz"),
            size="1.2 GB"),
        _classnames_res()),
        layout=_layout_by_map({"imagenetv2-matched-frequency.tar.gz": "imagenetv2-matched-frequency-format-val"}),
        licence="MIT (code); images from Flickr under ImageNet-style terms",
        homepage="https://github.com/modestyachts/ImageNetV2"),
    Recipe("imagenet_sketch", "imagenet-sketch", (
        Resource("ImageNet-Sketch.zip", (
            gdrive_url("1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA"),
            "https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip"),
            size="8.4 GB", gdrive=True),
        _classnames_res()),
        layout=_layout_sketch, licence="MIT", homepage="https://github.com/HaohanWang/ImageNet-Sketch"),
    Recipe("imagenet_a", "imagenet-adversarial", (
        Resource("imagenet-a.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",), size="690 MB"),
        _classnames_res()),
        layout=_layout_by_map({"imagenet-a.tar": "imagenet-a"}), licence="MIT",
        homepage="https://github.com/hendrycks/natural-adv-examples"),
    Recipe("imagenet_r", "imagenet-rendition", (
        Resource("imagenet-r.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",), size="2.2 GB"),
        _classnames_res()),
        layout=_layout_by_map({"imagenet-r.tar": "imagenet-r"}), licence="MIT",
        homepage="https://github.com/hendrycks/imagenet-r"),
]}


def manual_steps(name: str, root: str | os.PathLike) -> str:
    """What to do by hand when ``name`` cannot be (or could not be) fetched by script."""
    recipe = _recipe(name)
    root = Path(root)
    text = recipe.manual.format(root=root, cid=IMAGENET_CLASSNAMES_ID) if recipe.manual else ""
    if not text or recipe.automatic:
        lines = [f"To prepare {name!r} by hand, download these files into {root / DOWNLOADS_DIR / name}/ "
                 "and run the same command again (it verifies and lays them out):"]
        for res in recipe.resources:
            urls = " or ".join(res.urls)
            lines.append(f"  {res.filename}  ({res.size or 'size unknown'})  from {urls}")
        text = (text + "\n" if text else "") + "\n".join(lines)
    return text


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"no download recipe for dataset {name!r}; valid choices: {', '.join(RECIPES)}")
    return RECIPES[name]


def _fetch(res: Resource, dest: Path, manifest: Manifest, mirror: Optional[str], progress: bool) -> Path:
    urls = [mirror.rstrip("/") + "/" + res.filename] if mirror else list(res.urls)
    errors = []
    for url in urls:
        try:
            return download(url, dest, sha256=res.sha256, md5=res.md5, manifest=manifest,
                            reject_html=res.gdrive or bool(mirror), progress=progress)
        except DownloadError as exc:
            errors.append(str(exc))
    raise DownloadError("; ".join(errors))


def prepare(name: str, root: str | os.PathLike, *, recipe: Optional[Recipe] = None, mirror: Optional[str] = None,
            keep_archives: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Download, verify, extract and lay out dataset ``name`` under ``root``; returns its status.

    ``mirror``: a base URL (``http://host/path`` or ``file:///dir``) serving every resource under its
    filename, for clusters without internet. ``recipe``: use this recipe instead of the built-in one
    (tests). Archives are kept in ``<root>/.downloads/<name>/`` with ``keep_archives``, else removed
    after a successful layout. Raises ``DownloadError`` (with the manual steps), ``ChecksumError`` or
    ``UnsafeArchiveError``; on any error nothing is left in the dataset's folder that was not there.
    """
    from .real import REAL_DATASETS
    from .status import dataset_status

    recipe = recipe or _recipe(name)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    info = REAL_DATASETS[name]
    status = dataset_status(name, root)
    if status["state"] == "ready":
        log(f"{name}: already prepared in {status['path']} ({_counts(status)})")
        return status
    manifest = Manifest(root / MANIFEST_NAME)
    downloads = root / DOWNLOADS_DIR / name
    target = root / info.folder
    fetched: dict[str, Path] = {}
    try:
        for res in recipe.resources:
            if not res.extract and (target / (res.dest or res.filename)).is_file():
                continue          # already in place (a split file, imagenet/classnames.txt)
            if res.copy_from and (root / res.copy_from).is_file():
                fetched[res.filename] = root / res.copy_from
                continue
            log(f"{name}: fetching {res.filename} ({res.size or 'size unknown'})")
            fetched[res.filename] = _fetch(res, downloads / res.filename, manifest, mirror, progress)
    except DownloadError as exc:
        raise DownloadError(f"{name}: {exc}\n\n{manual_steps(name, root)}") from None

    staging = Path(tempfile.mkdtemp(prefix=f".capt-staging-{name}-", dir=root))
    try:
        out = staging / "out"
        out.mkdir()
        extracted: dict[str, Path] = {}
        for i, res in enumerate(recipe.resources):
            if res.filename not in fetched:
                continue
            if res.extract:
                log(f"{name}: extracting {res.filename}")
                extracted[res.filename] = safe_extract(fetched[res.filename], staging / f"x{i}")
            else:
                shutil.copy2(fetched[res.filename], out / (res.dest or res.filename))
        if recipe.layout is not None and extracted:
            recipe.layout(extracted, out)
        _commit(out, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    status = dataset_status(name, root)
    if status["state"] == "ready":
        log(f"{name}: ready in {status['path']} ({_counts(status)})")
        if not keep_archives:
            for res in recipe.resources:
                path = fetched.get(res.filename)
                if path is not None and path.parent == downloads and res.extract:
                    path.unlink(missing_ok=True)
    elif recipe.automatic:
        log(f"{name}: laid out, but not complete: {status['detail']}")
    else:
        log(manual_steps(name, root))
    return status


def _commit(out: Path, target: Path) -> None:
    """Move the staged dataset folder into place (whole when new, entry by entry into an existing one)."""
    if not target.exists():
        os.replace(out, target)
        return
    for child in sorted(out.iterdir()):
        _move(child, target / child.name)


def _counts(status: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in status["counts"].items()) + f"; {status['classes']} classes"
