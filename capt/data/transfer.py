"""Getting files safely, for any dataset: verified, resumable downloads and safe archive extraction.

Nothing here knows about a particular dataset (their recipes are in :mod:`capt.data.download`):

* :func:`download` fetches one URL (``http(s)://`` or ``file://``) to a ``.part`` file, resuming an
  interrupted transfer with an HTTP ``Range`` request, checks the result (``sha256``/``md5`` where
  pinned, otherwise the hash recorded in the :class:`Manifest` on first download) and only then renames
  it into place. A file already present and verified is not fetched again.
* :class:`Manifest` (``<root>/.capt-manifest.json``) records the sha256 of every unpinned file on its
  first download (trust on first use); later downloads are verified against it.
* :func:`safe_extract` unpacks a tar or zip archive, refusing members with absolute paths or ``..``,
  links that point outside the target, and device files.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional, Sequence

from ..io import atomic_write_json

__all__ = [
    "ChecksumError", "DownloadError", "UnsafeArchiveError", "Manifest",
    "download", "safe_extract", "file_hashes", "gdrive_url",
]

MANIFEST_NAME = ".capt-manifest.json"
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
    FIFOs. Extract into a fresh folder you can delete on failure (:func:`capt.data.download.prepare` does).
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


# -- URLs -------------------------------------------------------------------------------------------
def gdrive_url(file_id: str) -> str:
    """A direct-download URL for a public Google Drive file (skips the large-file confirmation page)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"
