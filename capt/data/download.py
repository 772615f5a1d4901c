"""Download, verify and lay out the real datasets: ``prepare(name, root)``.

The building blocks, each usable alone:

* :func:`download` fetches one URL (``http(s)://`` or ``file://``) to a ``.part`` file, resuming an
  interrupted transfer with an HTTP ``Range`` request, checks the result (``sha256``/``md5`` where
  pinned, otherwise the hash recorded in the local manifest on first download) and only then renames
  it into place. A file already present and verified is not fetched again.
* :func:`safe_extract` unpacks a tar or zip archive, refusing members with absolute paths or ``..``,
  links that point outside the target, and device files.
* :func:`prepare` runs a dataset's :class:`Recipe`: download every resource, extract into a staging
  folder inside the data root, lay the files out where :mod:`capt.data.real` reads them, then move
  the result into place. Any failure removes the staging folder, so no half-written dataset is left.

Hashes: the md5 sums torchvision pins for the same archives are pinned here; no sha256 of these
archives is published, so each archive's sha256 is recorded in ``<root>/.capt-manifest.json`` on the
first download (trust on first use) and later downloads are verified against it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Optional, Sequence

from .splits import atomic_write_json

__all__ = [
    "ChecksumError", "DownloadError", "UnsafeArchiveError", "Manifest", "Resource", "Recipe", "RECIPES",
    "download", "safe_extract", "file_hashes", "prepare", "manual_steps", "gdrive_url",
]

MANIFEST_NAME = ".capt-manifest.json"
DOWNLOADS_DIR = ".downloads"
USER_AGENT = "capt-data/0.1 (+https://github.com/)"


class DownloadError(OSError):
    """A download that could not complete (network, HTTP status, a web page instead of a file)."""


class ChecksumError(ValueError):
    """A downloaded file whose hash differs from the pinned or recorded one; the file is removed."""


class UnsafeArchiveError(ValueError):
    """An archive member that would land outside the extraction folder (or is a device file)."""


# -- hashing and the manifest ----------------------------------------------------------------------
def file_hashes(path: str | os.PathLike, chunk: int = 1 << 20) -> dict[str, str]:
    """``{"sha256": ..., "md5": ...}`` of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


class Manifest:
    """``<root>/.capt-manifest.json``: the sha256 of every file downloaded, recorded on first download.

    Entries are keyed by the file's path relative to the data root and keep ``sha256``, ``md5``,
    ``size``, ``mtime_ns``, ``url`` and ``recorded`` (UTC time). A file whose size and mtime match its
    entry counts as verified without hashing it again.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8")).get("files", {})
            except (json.JSONDecodeError, AttributeError) as exc:
                raise ValueError(f"manifest {self.path} is not valid JSON ({exc}); move it aside to start a new one")

    def key(self, file: Path) -> str:
        try:
            return Path(os.path.relpath(file, self.path.parent)).as_posix()
        except ValueError:  # another drive on Windows
            return str(file)

    def get(self, file: Path) -> Optional[dict]:
        return self.entries.get(self.key(file))

    def record(self, file: Path, hashes: dict[str, str], url: str | None) -> None:
        st = file.stat()
        self.entries[self.key(file)] = {
            **hashes, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "url": url,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(self.path, {"format": "capt-manifest/v1", "files": self.entries})

    def unchanged(self, file: Path) -> bool:
        entry = self.get(file)
        if not entry:
            return False
        st = file.stat()
        return entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


def _verify(path: Path, sha256: Optional[str], md5: Optional[str], manifest: Optional[Manifest],
            url: Optional[str], name: Optional[Path] = None) -> dict[str, str]:
    """Check ``path`` against pinned hashes, else the manifest entry of ``name`` (default ``path``).

    Returns the file's hashes; raises ChecksumError.
    """
    name = name or path
    hashes = file_hashes(path)
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want and hashes[algo] != want.lower():
            raise ChecksumError(f"{name.name}: {algo} is {hashes[algo]}, expected {want} "
                                f"(from {url or 'a local copy'}); the file is corrupt or not the official one")
    if not sha256 and manifest is not None:
        entry = manifest.get(name)
        if entry and entry.get("sha256") and entry["sha256"] != hashes["sha256"]:
            raise ChecksumError(
                f"{name.name}: sha256 is {hashes['sha256']}, but the first download (recorded "
                f"{entry.get('recorded')} in {manifest.path}) had {entry['sha256']}; if the upstream file changed "
                "on purpose, remove its entry from the manifest")
    return hashes


# -- one download -------------------------------------------------------------------------------------
def _open(url: str, offset: int, timeout: float):
    """(stream, status, total_size_or_None, resumed) for ``url`` starting at byte ``offset``."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        if not path.is_file():
            raise DownloadError(f"no such file: {path} (from {url})")
        size = path.stat().st_size
        fh = open(path, "rb")
        if offset > size:
            offset = 0
        fh.seek(offset)
        return fh, 206 if offset else 200, size, offset > 0
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme {parsed.scheme!r} in {url}; use http(s):// or file://")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return None, 416, None, False
        if exc.code >= 500 or exc.code == 429:
            raise ConnectionError(f"HTTP {exc.code} {exc.reason} for {url}") from None   # retried
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from None
    status = response.status
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if status == 206:
        content_range = response.headers.get("Content-Range", "")
        # "bytes START-END/TOTAL"
        try:
            start = int(content_range.split()[1].split("-")[0])
            total = content_range.rsplit("/", 1)[1]
            total = int(total) if total.isdigit() else None
        except (IndexError, ValueError):
            start, total = -1, None
        if start != offset:
            response.close()
            raise DownloadError(f"{url}: server resumed at byte {start}, not {offset}")
        return response, 206, total, True
    return response, status, length, False


def _looks_like_html(head: bytes) -> bool:
    text = head[:512].lstrip().lower()
    return text.startswith(b"<!doctype html") or text.startswith(b"<html")


def download(url: str, dest: str | os.PathLike, *, sha256: Optional[str] = None, md5: Optional[str] = None,
             manifest: Optional[Manifest] = None, reject_html: bool = False, retries: int = 3,
             timeout: float = 60.0, progress: bool = True, chunk_size: int = 1 << 20,
             backoff: float = 1.0) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify it, and return ``dest``.

    ``sha256``/``md5``: pinned hashes (``None``: not pinned). ``manifest``: where unpinned hashes are
    recorded on first download and checked afterwards. ``reject_html``: a web page instead of the
    file (a Google Drive quota or login page) is an error. A file already at ``dest`` that verifies
    is kept; one that does not is removed and fetched again. A transfer that breaks off is resumed
    up to ``retries`` times; after that the ``.part`` file stays for the next run to resume.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        entry = manifest.get(dest) if manifest is not None else None
        if (entry and manifest.unchanged(dest) and (not sha256 or entry.get("sha256") == sha256.lower())
                and (not md5 or entry.get("md5") == md5.lower())):
            return dest                    # verified before and untouched since
        try:
            hashes = _verify(dest, sha256, md5, manifest, url)
        except ChecksumError as exc:
            print(f"[capt] {exc}; downloading it again", file=sys.stderr)
            dest.unlink()
        else:
            if manifest is not None:
                manifest.record(dest, hashes, (entry or {}).get("url", url))
            return dest
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        try:
            complete = _transfer(url, part, offset, reject_html, timeout, progress, chunk_size)
        except DownloadError:
            raise                          # permanent: HTTP 4xx, a web page, a missing file
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, socket.gaierror):
                raise DownloadError(f"cannot resolve the host of {url} ({reason}); is there internet access? "
                                    "A --mirror serves the files from a local folder or server") from None
            attempt += 1
            if attempt > retries:
                raise DownloadError(f"download of {url} failed after {retries} retries ({exc}); "
                                    f"run the same command again to resume from {part}") from None
            time.sleep(min(2.0 ** attempt, 30.0) * backoff)
            continue
        if complete:
            break
        attempt += 1
        if attempt > retries:
            raise DownloadError(f"download of {url} ended early {retries + 1} times; run again to resume from {part}")
    try:
        hashes = _verify(part, sha256, md5, manifest, url, name=dest)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    if manifest is not None:
        manifest.record(dest, hashes, url)
    return dest


def _transfer(url, part: Path, offset: int, reject_html: bool, timeout, progress, chunk_size) -> bool:
    """One attempt: append to ``part`` from ``offset``. True when the file is complete."""
    stream, status, total, resumed = _open(url, offset, timeout)
    if status == 416:      # the server has nothing past ``offset``: the part is already whole
        return True
    if not resumed and offset:
        offset = 0         # the server ignored Range: start again
    bar = None
    try:
        with open(part, "ab" if resumed else "wb") as out:
            if progress:
                try:
                    from tqdm import tqdm

                    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=part.name[:-5], leave=False)
                except ImportError:  # pragma: no cover - tqdm is a dependency
                    bar = None
            first = True
            received = offset
            while block := stream.read(chunk_size):
                if first and not resumed and reject_html and _looks_like_html(block):
                    out.close()
                    part.unlink(missing_ok=True)
                    raise DownloadError(
                        f"{url} returned a web page, not the file (a quota, login or confirmation page); "
                        f"download it in a browser and put it at {part.with_suffix('')}, then run again")
                first = False
                out.write(block)
                received += len(block)
                if bar is not None:
                    bar.update(len(block))
    finally:
        stream.close()
        if bar is not None:
            bar.close()
    return total is None or received >= total


# -- safe extraction --------------------------------------------------------------------------------
def _member_parts(name: str) -> list[str]:
    """The path components of an archive member name, rejecting absolute or parent-relative names."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    return parts


def _inside(base: Path, target: str) -> bool:
    base_s = os.path.realpath(base)
    target_s = os.path.realpath(target)
    return target_s == base_s or target_s.startswith(base_s.rstrip(os.sep) + os.sep)


def _check_link(dest: Path, member_parts: Sequence[str], link: str, hard: bool, name: str) -> None:
    norm = link.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} links to the absolute path {link!r}")
    base = dest if hard else dest.joinpath(*member_parts[:-1])
    target = os.path.normpath(os.path.join(base, norm))
    if not _inside(dest, target):
        raise UnsafeArchiveError(f"archive member {name!r} links to {link!r}, outside the extraction folder")


def archive_kind(path: str | os.PathLike) -> str:
    """``"zip"`` or ``"tar"`` (any compression), by content."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise ValueError(f"{path} is neither a zip nor a tar archive")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``archive`` into ``dest``, refusing any member that would escape it. Returns ``dest``.

    Rejected (``UnsafeArchiveError``, checked per member before it is written): absolute names,
    names with ``..``, symbolic or hard links whose target lies outside ``dest``, device files and
    FIFOs. Extract into a fresh folder you can delete on failure (:func:`prepare` does).
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if archive_kind(archive) == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = _member_parts(info.filename)
                if not parts:
                    continue
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    _check_link(dest, parts, zf.read(info).decode("utf-8", "replace"), False, info.filename)
                    continue     # zipfile would write the link as a text file; links are never needed
                if not _inside(dest, str(dest.joinpath(*parts))):
                    raise UnsafeArchiveError(f"archive member {info.filename!r} resolves outside {dest}")
                zf.extract(info, dest)
        return dest
    data_filter = getattr(tarfile, "data_filter", None)
    with tarfile.open(archive) as tf:
        for member in tf:
            parts = _member_parts(member.name)
            if not parts:
                continue
            if member.issym() or member.islnk():
                _check_link(dest, parts, member.linkname, member.islnk(), member.name)
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(f"archive member {member.name!r} is a device file or FIFO")
            if not _inside(dest, str(dest.joinpath(*parts[:-1]))):
                raise UnsafeArchiveError(f"archive member {member.name!r} resolves outside {dest}")
            try:
                if data_filter is not None:
                    tf.extract(member, dest, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extract(member, dest)
            except tarfile.TarError as exc:  # the standard library's own filter said no
                raise UnsafeArchiveError(f"archive member {member.name!r}: {exc}") from None
    return dest


# -- recipes ----------------------------------------------------------------------------------------
def gdrive_url(file_id: str) -> str:
    """A direct-download URL for a public Google Drive file (skips the large-file confirmation page)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


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
    from .real import REAL_DATASETS, dataset_status

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
