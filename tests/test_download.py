"""Downloads (resume, checksums, manifest), safe extraction, and `prepare` end to end, all offline.

A tiny HTTP server on 127.0.0.1 (with Range support, and switches to misbehave) stands in for the
official hosts; ``file://`` URLs are tested too.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from capt.data import load_dataset
from capt.data.download import RECIPES, manual_steps, prepare
from capt.data.transfer import ChecksumError, DownloadError, Manifest, UnsafeArchiveError, download, safe_extract
from fixtures_data import EUROSAT_CLASSES, jpeg_bytes, make_tar, make_zip, write_classnames


# -- a local file server -------------------------------------------------------------------------------
class FileServer:
    """Serves ``files`` ({"/name": bytes}); records every request's path and Range header."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.cut_first_after: int | None = None   # the first GET sends only this many bytes, then hangs up
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                ctype = "text/html" if body.lstrip().lower().startswith(b"<!doctype html") else "application/octet-stream"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut_first_after is not None:
                    payload = payload[:server.cut_first_after]
                    server.cut_first_after = None
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


PAYLOAD = bytes(range(256)) * 400          # 100 kB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


# -- download ----------------------------------------------------------------------------------------------
def test_download_and_verify(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = download(server.url + "/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "a.bin.part").exists()
    assert server.requests == [("/a.bin", None)]
    # already there and verified: no second request
    download(server.url + "/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False)
    assert len(server.requests) == 1


def test_resume_from_a_part_file(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:30000])
    download(server.url + "/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False, chunk_size=4096)
    assert server.requests == [("/a.bin", "bytes=30000-")]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_interrupted_transfer_resumes(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.cut_first_after = 12345
    download(server.url + "/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False, backoff=0)
    assert server.requests[0] == ("/a.bin", None) and server.requests[1] == ("/a.bin", "bytes=12345-")
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:5000])
    download(server.url + "/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_file_gets_416_and_is_verified(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    download(server.url + "/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    with pytest.raises(ChecksumError, match="sha256 is .* expected 0000"):
        download(server.url + "/a.bin", tmp_path / "a.bin", sha256="0" * 64, progress=False)
    with pytest.raises(ChecksumError, match="md5"):
        download(server.url + "/a.bin", tmp_path / "a.bin", md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_and_web_pages(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url + "/missing.bin", tmp_path / "m.bin", progress=False)
    assert len(server.requests) == 1                          # a 404 is not retried
    server.files["/quota"] = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>"
    with pytest.raises(DownloadError, match="returned a web page"):
        download(server.url + "/quota", tmp_path / "split.json", reject_html=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_scheme(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        download("ftp://example.org/x", tmp_path / "x", progress=False)


def test_file_url_and_resume(tmp_path):
    src = tmp_path / "src" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:777])
    download(src.as_uri(), tmp_path / "a.bin", sha256=SHA, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="no such file"):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "n.bin", progress=False)


def test_manifest_records_then_verifies(server, tmp_path):
    manifest = Manifest(tmp_path / ".capt-manifest.json")
    server.files["/a.bin"] = PAYLOAD
    dest = download(server.url + "/a.bin", tmp_path / "dl" / "a.bin", manifest=manifest, progress=False)
    entry = json.loads((tmp_path / ".capt-manifest.json").read_text())["files"]["dl/a.bin"]
    assert entry["sha256"] == SHA and entry["size"] == len(PAYLOAD) and entry["url"].endswith("/a.bin")
    # upstream changes the file: the new download no longer matches the first one
    dest.unlink()
    server.files["/a.bin"] = PAYLOAD[::-1]
    with pytest.raises(ChecksumError, match="first download"):
        download(server.url + "/a.bin", dest, manifest=Manifest(tmp_path / ".capt-manifest.json"), progress=False)
    assert not dest.exists() and not dest.with_name("a.bin.part").exists()


def test_corrupt_file_in_place_is_fetched_again(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin").write_bytes(b"garbage")
    download(server.url + "/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


# -- safe extraction -------------------------------------------------------------------------------------------
def _tar_with(path: Path, *infos: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tf:
        for info in infos:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _file(name, size=1):
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_safe_extract_good_archives(tmp_path):
    tgz = make_tar(tmp_path / "ok.tar.gz", {"top/a.txt": b"a", "top/sub/b.txt": b"b"})
    out = safe_extract(tgz, tmp_path / "t")
    assert (out / "top" / "sub" / "b.txt").read_bytes() == b"b"
    zp = make_zip(tmp_path / "ok.zip", {"top/a.txt": b"a", "top/dir/": b""})
    out = safe_extract(zp, tmp_path / "z")
    assert (out / "top" / "a.txt").read_bytes() == b"a"
    inner = _tar_with(tmp_path / "inner.tar", _file("d/f.txt"), _link("d/l", "f.txt"))
    safe_extract(inner, tmp_path / "i")                       # a link that stays inside is fine
    assert (tmp_path / "i" / "d" / "l").is_symlink()


@pytest.mark.parametrize("member", ["../evil.txt", "a/../../evil.txt", "/tmp/capt_evil_abs.txt"])
def test_tar_rejects_escaping_names(tmp_path, member):
    archive = _tar_with(tmp_path / "bad.tar", _file("fine.txt"), _file(member))
    with pytest.raises(UnsafeArchiveError, match="absolute|'\\.\\.'"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/capt_evil_abs.txt").exists()


@pytest.mark.parametrize("info", [
    _link("link", "../../outside"), _link("d/link", "/etc/passwd"), _link("hard", "../outside", tarfile.LNKTYPE),
])
def test_tar_rejects_links_escaping(tmp_path, info):
    archive = _tar_with(tmp_path / "bad.tar", _file("d/f.txt"), info)
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / info.name).exists()


def test_tar_rejects_link_then_write_through_it(tmp_path):
    archive = _tar_with(tmp_path / "bad.tar", _link("sub", ".."), _file("sub/escaped.txt"))
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "out" / "inner")
    assert not (tmp_path / "out" / "escaped.txt").exists()


def test_tar_rejects_device_files(tmp_path):
    info = tarfile.TarInfo("dev")
    info.type = tarfile.CHRTYPE
    archive = _tar_with(tmp_path / "bad.tar", info)
    with pytest.raises(UnsafeArchiveError, match="device"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize("member", ["../evil.txt", "/abs_evil.txt", "C:/evil.txt"])
def test_zip_rejects_escaping_names(tmp_path, member):
    archive = make_zip(tmp_path / "bad.zip", {"ok.txt": b"1", member: b"2"})
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_rejects_symlink_escaping(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "../../outside")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(path, tmp_path / "out")


def test_not_an_archive(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"plain text")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        safe_extract(tmp_path / "x.tar", tmp_path / "out")


# -- prepare, end to end -----------------------------------------------------------------------------------------
def _eurosat_files(server: FileServer, evil: bool = False) -> None:
    members = {}
    split = {"train": [], "val": [], "test": []}
    for label, cname in enumerate(EUROSAT_CLASSES):
        folder = cname.replace(" ", "")
        for part in split:
            rel = f"{folder}/{folder}_{part}.jpg"
            members[f"EuroSAT/2750/{rel}"] = jpeg_bytes(40 * label + 10)
            split[part].append([rel, label, cname])
    if evil:
        members["../evil.txt"] = b"x"
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    server.files["/EuroSAT.zip"] = zbuf.getvalue()
    server.files["/split_zhou_EuroSAT.json"] = json.dumps(split).encode()


def _local_recipe(name: str, base_url: str, **pins):
    recipe = RECIPES[name]
    resources = tuple(replace(r, urls=(f"{base_url}/{r.filename}",), md5=pins.get(r.filename), sha256=None)
                      for r in recipe.resources)
    return replace(recipe, resources=resources)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".capt-staging"))


def test_prepare_eurosat_over_http(server, tmp_path):
    _eurosat_files(server)
    root = tmp_path / "data"
    logs = []
    status = prepare("eurosat", root, recipe=_local_recipe("eurosat", server.url), progress=False, log=logs.append)
    assert status["state"] == "ready" and status["counts"] == {"train": 3, "val": 3, "test": 3}
    assert (root / "eurosat" / "2750").is_dir() and (root / "eurosat" / "split_zhou_EuroSAT.json").is_file()
    assert not (root / ".downloads" / "eurosat" / "EuroSAT.zip").exists()          # archive removed once ready
    assert _leftovers(root) == []
    manifest = json.loads((root / ".capt-manifest.json").read_text())["files"]
    assert set(manifest) == {".downloads/eurosat/EuroSAT.zip", ".downloads/eurosat/split_zhou_EuroSAT.json"}
    ds = load_dataset("eurosat", "test", root)
    assert ds.classnames == EUROSAT_CLASSES and ds[0][0].shape == (3, 4, 4)
    n = len(server.requests)
    again = prepare("eurosat", root, recipe=_local_recipe("eurosat", server.url), progress=False, log=logs.append)
    assert again["state"] == "ready" and len(server.requests) == n and "already prepared" in logs[-1]


def test_prepare_checksum_mismatch_leaves_no_dataset(server, tmp_path):
    _eurosat_files(server)
    root = tmp_path / "data"
    recipe = _local_recipe("eurosat", server.url, **{"EuroSAT.zip": "0" * 32})
    with pytest.raises(ChecksumError):
        prepare("eurosat", root, recipe=recipe, progress=False, log=lambda s: None)
    assert not (root / "eurosat").exists() and _leftovers(root) == []
    assert not list((root / ".downloads" / "eurosat").glob("EuroSAT.zip*"))


def test_prepare_unsafe_archive_leaves_no_dataset(server, tmp_path):
    _eurosat_files(server, evil=True)
    root = tmp_path / "data"
    with pytest.raises(UnsafeArchiveError):
        prepare("eurosat", root, recipe=_local_recipe("eurosat", server.url), progress=False, log=lambda s: None)
    assert not (root / "eurosat").exists() and _leftovers(root) == []
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()


def test_prepare_from_a_file_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    members = {f"imagenet-a/{w}/{i}.jpg": jpeg_bytes(i) for w in ("n01443537", "n01491361") for i in range(2)}
    members["imagenet-a/README.txt"] = b"readme"
    make_tar(mirror / "imagenet-a.tar", members, mode="w")
    root = tmp_path / "data"
    write_classnames(root / "imagenet" / "classnames.txt")
    recipe = _local_recipe("imagenet_a", "unused")
    status = prepare("imagenet_a", root, recipe=recipe, mirror=mirror.as_uri(), keep_archives=True,
                     progress=False, log=lambda s: None)
    assert status["state"] == "ready" and status["classes"] == 2 and status["counts"] == {"test": 4}
    assert (root / "imagenet-adversarial" / "classnames.txt").is_file()              # copied, as CoOp does
    assert (root / ".downloads" / "imagenet_a" / "imagenet-a.tar").is_file()        # --keep-archives
    assert load_dataset("imagenet_a", "test", root).classnames == ["goldfish", "tiger shark"]


def test_prepare_imagenet_prints_the_manual_steps(tmp_path):
    root = tmp_path / "data"
    write_classnames(root / "imagenet" / "classnames.txt")
    logs = []
    status = prepare("imagenet", root, progress=False, log=logs.append)      # nothing to download
    assert status["state"] == "partial"
    text = "\n".join(logs)
    assert "image-net.org" in text and f"{root}/imagenet/images/train" in text and "valprep" in text


def test_failed_download_shows_manual_steps(server, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        prepare("dtd", root, recipe=_local_recipe("dtd", server.url), progress=False, log=lambda s: None)
    msg = str(err.value)
    assert "HTTP 404" in msg and "by hand" in msg and str(root / ".downloads" / "dtd") in msg
    assert "dtd-r1.0.1.tar.gz" in msg and not (root / "dtd").exists()


def test_every_dataset_has_a_recipe_and_manual_steps(tmp_path):
    from capt.data.real import REAL_DATASETS

    assert set(RECIPES) == set(REAL_DATASETS)
    for name, recipe in RECIPES.items():
        assert recipe.folder == REAL_DATASETS[name].folder
        assert recipe.licence and recipe.homepage
        assert all(r.urls and all(u.startswith(("https://", "http://")) for u in r.urls) for r in recipe.resources)
        assert manual_steps(name, tmp_path)


def test_prepare_script_and_cli(server, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "prepare_data", Path(__file__).parents[1] / "data_scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["nope", "--root", str(tmp_path)]) == 2
    assert "valid choices" in capsys.readouterr().err
    # a mirror without the file: a clear error, the manual steps, exit status 1
    assert module.main(["eurosat", "--root", str(tmp_path), "--mirror", server.url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "eurosat" in err and "HTTP 404" in err and "not ready: eurosat" in err
