"""Inputs that cannot hurt: no code runs from a loaded file, no archive writes outside its folder, downloads
are verified before use, and a run writes only inside its output folder.

- Checkpoints and caches load with ``weights_only=True``: a pickle that would run code is refused with a
  clear error, and the code does not run (the same file loaded the unsafe way does run it, which proves
  the bomb is live). YAML goes through ``safe_load``; notebook parameters are read with ``ast``, never run.
- A scan of ``capt/`` with ``ast``: no ``eval``/``exec``/``pickle``/``marshal``/unsafe YAML, no
  ``torch.load`` without ``weights_only=True``, no ``shell=True``, no ``extractall``.
- Archives: more members that try to escape (symlink chains, backslashes, drive letters, hard links to
  absolute paths, FIFOs, setuid bits) than ``tests/test_download.py`` already covers.
- Downloads: a pinned sha256, or the one recorded on first download, is checked before the file is used.
- A small experiment run in a child process with an audit hook: every file it creates, writes, renames
  or deletes lies inside its ``out_dir``.
"""

from __future__ import annotations

import ast
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

import capt
from capt.data.transfer import ChecksumError, Manifest, UnsafeArchiveError, download, safe_extract
from capt.train import TrainConfig, load_prompts, train

from conftest import MINI_RUN, make_tiny_clip

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "capt"


# -- 1. pickle bombs -------------------------------------------------------------------------------------
class Bomb:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture()
def bomb(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "checkpoint.pt"
    # A file that looks like a capt checkpoint on the outside, with the payload inside.
    torch.save({"format": "capt-train/1", "meta": {"method": "capt"}, "prompts": Bomb(marker)}, path)
    return path, marker


def test_the_bomb_is_live(bomb):
    path, marker = bomb
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "pwned"


def _model(clip=None):
    return capt.PromptedCLIP(clip or make_tiny_clip(), ["a", "b"], prompt="maple", n_ctx=2, depth=2)


@pytest.mark.parametrize("how", ["load_prompts", "train(resume=True)", "load_clip('mini')",
                                 "load_clip('ViT-S-32', pretrained=file)"])
def test_a_pickle_bomb_is_refused_and_never_runs(how, bomb, tiny_clip):
    path, marker = bomb
    with pytest.raises(Exception) as err:
        if how == "load_prompts":
            load_prompts(_model(tiny_clip), path)
        elif how == "train(resume=True)":
            data = capt.data.TensorImages("toy", torch.zeros(4, 3, 32, 32, dtype=torch.uint8), [0, 1, 0, 1], ["a", "b"])
            train(_model(tiny_clip), data, "capt", TrainConfig(epochs=1, batch_size=4), out_dir=path.parent,
                  resume=True, progress=False)
        elif how == "load_clip('mini')":
            capt.load_clip("mini", checkpoint=path)
        else:
            capt.load_clip("ViT-S-32", pretrained=str(path))
    text = str(err.value)
    assert "Weights only load failed" in text, text       # refused by torch.load(weights_only=True) ...
    if not how.startswith("load_clip('ViT"):              # ... and capt's own loaders name the file
        assert str(path) in text, text
    assert not marker.exists(), "the payload ran"


def test_yaml_with_python_tags_is_refused(tmp_path):
    from capt.cli import main
    from capt.profiles import load_profile

    marker = tmp_path / "PWNED"
    payload = f'!!python/object/apply:os.system ["touch {marker}"]'
    profile = tmp_path / "evil.yaml"
    profile.write_text(f"parameters:\n  seeds: {payload}\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_profile(profile)
    with pytest.raises(SystemExit, match="is not valid YAML"):
        main(["run", "mini", "--set", f"seeds={payload}"])
    assert not marker.exists()


def test_notebook_parameters_are_read_not_run(tmp_path):
    import nbformat

    from tools.notebook_params import notebook_defaults

    marker = tmp_path / "PWNED"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"seeds = [1]\nx = __import__('pathlib').Path({str(marker)!r}).write_text('p')")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    path = tmp_path / "evil.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="parameter x must be a literal"):
        notebook_defaults(path)
    assert not marker.exists()


# -- 2. the source scan ----------------------------------------------------------------------------------
FORBIDDEN_CALLS = {
    "eval": "eval() runs text as code", "exec": "exec() runs text as code",
    "pickle.load": "pickle runs code", "pickle.loads": "pickle runs code", "pickle.Unpickler": "pickle runs code",
    "cPickle.load": "pickle runs code", "marshal.load": "marshal", "marshal.loads": "marshal",
    "shelve.open": "shelve is pickle", "dill.load": "dill is pickle", "dill.loads": "dill is pickle",
    "cloudpickle.load": "pickle", "cloudpickle.loads": "pickle", "joblib.load": "joblib is pickle",
    "pd.read_pickle": "pickle", "pandas.read_pickle": "pickle", "yaml.load": "use yaml.safe_load",
    "yaml.unsafe_load": "use yaml.safe_load", "yaml.full_load": "use yaml.safe_load", "os.system": "a shell",
    "os.popen": "a shell", "__import__": "dynamic import", "tarfile.TarFile.extractall": "use safe_extract",
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def scan(source: str, filename: str) -> list[str]:
    """Every dangerous call in ``source``: ``file:line: call (why)``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        short = name.rsplit(".", 1)[-1]
        where = f"{filename}:{node.lineno}"
        if name in FORBIDDEN_CALLS:
            found.append(f"{where}: {name} ({FORBIDDEN_CALLS[name]})")
        elif short == "extractall":
            found.append(f"{where}: {name} (extract member by member through safe_extract)")
        elif name == "torch.load" or (short == "load" and name.startswith("torch.")):
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: {name} without weights_only=True")
        elif short in ("create_model_and_transforms", "create_model", "load_checkpoint") and "open_clip" in name:
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: {name} without weights_only=True")
        elif name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where}: {name} with allow_pickle")
        if _kw(node, "shell") is not None and not (isinstance(_kw(node, "shell"), ast.Constant)
                                                   and _kw(node, "shell").value is False):
            found.append(f"{where}: {name} with shell=True")
    return found


def test_the_scanner_finds_what_it_looks_for():
    bad = """
import pickle, yaml, torch, subprocess, tarfile, numpy as np, open_clip
eval("1"); exec("x = 1"); pickle.loads(b""); yaml.load("a"); torch.load("f.pt")
torch.load("f.pt", weights_only=False); subprocess.run("ls", shell=True); tarfile.open("a").extractall("b")
np.load("a.npy", allow_pickle=True); __import__("os"); open_clip.create_model_and_transforms("ViT-B-32")
"""
    found = scan(bad, "bad.py")
    assert len(found) == 11, found
    ok = 'torch.load("f.pt", map_location="cpu", weights_only=True); yaml.safe_load("a"); m.eval()\n'
    assert scan(ok, "ok.py") == []


def test_no_code_execution_from_files_anywhere_in_the_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 15
    found = [f for path in files for f in scan(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert found == [], "dangerous calls in capt/:\n" + "\n".join(found)


# -- 3. archives -----------------------------------------------------------------------------------------
def _tar(path: Path, *members: tuple) -> Path:
    """members: (name, kind, payload): kind 'file' (payload bytes), 'sym'/'hard' (payload target), 'fifo'."""
    with tarfile.open(path, "w") as tf:
        for name, kind, payload, *mode in members:
            info = tarfile.TarInfo(name)
            if mode:
                info.mode = mode[0]
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                         "dir": tarfile.DIRTYPE}[kind]
            info.linkname = payload or ""
            tf.addfile(info)
    return path


def _outside(tmp: Path) -> list[str]:
    """Files that appeared next to the extraction folder (what an escape would write)."""
    return sorted(p.name for p in tmp.iterdir() if p.name not in ("a.tar", "a.zip", "out"))


NASTY_TARS = {
    "symlink chain (s -> ., s/l -> .., s/l/evil)": [("s", "sym", "."), ("s/l", "sym", ".."),
                                                   ("s/l/evil.txt", "file", b"x")],
    "backslashes (..\\..\\evil)": [("ok.txt", "file", b"1"), ("..\\..\\evil.txt", "file", b"x")],
    "drive letter (C:\\evil)": [("C:\\evil.txt", "file", b"x")],
    "hard link to an absolute path": [("h", "hard", "/etc/passwd")],
    "symlink to a sibling of the folder": [("d", "dir", None), ("d/up", "sym", "../../out_sibling")],
    "FIFO": [("pipe", "fifo", None)],
    "a file written through a link made by an earlier member": [("d", "sym", "../"), ("d/evil.txt", "file", b"x")],
}


@pytest.mark.parametrize("name", list(NASTY_TARS))
def test_nasty_tar_members_are_refused(name, tmp_path):
    archive = _tar(tmp_path / "a.tar", *NASTY_TARS[name])
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "out")
    assert _outside(tmp_path) == []
    assert not Path("/tmp/evil.txt").exists()


def test_tar_extraction_drops_setuid_bits_and_keeps_links_inside(tmp_path):
    archive = _tar(tmp_path / "a.tar", ("bin/tool", "file", b"#!/bin/sh\n", 0o4755), ("d", "dir", None),
                   ("d/link", "sym", "../bin/tool"))
    out = safe_extract(archive, tmp_path / "out")
    mode = (out / "bin" / "tool").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID)
    assert (out / "d" / "link").resolve() == (out / "bin" / "tool").resolve()


@pytest.mark.parametrize("member", ["..\\evil.txt", "dir/../../evil.txt", "\\\\server\\share\\evil.txt",
                                    "D:evil.txt"])
def test_nasty_zip_members_are_refused(member, tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("ok.txt", "1")
        zf.writestr(zipfile.ZipInfo(member), "x")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(tmp_path / "a.zip", tmp_path / "out")
    assert _outside(tmp_path) == []


# -- 4. downloads verified before use -------------------------------------------------------------------------
def test_pinned_sha256_is_checked_before_the_file_is_used(tmp_path):
    import hashlib

    src = tmp_path / "src" / "data.zip"
    src.parent.mkdir()
    src.write_bytes(b"the official bytes")
    good = hashlib.sha256(b"the official bytes").hexdigest()
    dest = tmp_path / "dl" / "data.zip"
    with pytest.raises(ChecksumError, match="sha256 is .* expected"):
        download(src.as_uri(), dest, sha256="f" * 64, progress=False)
    assert not dest.exists() and not dest.with_name("data.zip.part").exists()
    assert download(src.as_uri(), dest, sha256=good, progress=False).read_bytes() == b"the official bytes"


def test_recorded_sha256_catches_a_changed_upstream_file(tmp_path):
    src = tmp_path / "src" / "data.zip"
    src.parent.mkdir()
    src.write_bytes(b"first version")
    manifest = Manifest(tmp_path / "root" / ".capt-manifest.json")
    dest = tmp_path / "root" / "data.zip"
    download(src.as_uri(), dest, manifest=manifest, progress=False)   # trust on first use
    dest.unlink()
    src.write_bytes(b"tampered version")
    with pytest.raises(ChecksumError, match="but the first download .* had"):
        download(src.as_uri(), dest, manifest=Manifest(manifest.path), progress=False)
    assert not dest.exists()


# -- 5. a run writes only inside its output folder -----------------------------------------------------------
AUDIT_CHILD = r"""
import json, os, sys
out, log, tests = sys.argv[1], sys.argv[2], sys.argv[3]
events, on = [], [True]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def hook(event, args):
    if not on[0]:
        return
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (mode is None and flags & WRITE_FLAGS)
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            events.append([event, os.fsdecode(path)])
    elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.symlink", "os.link",
                   "os.chmod", "shutil.rmtree", "shutil.move", "shutil.copyfile", "tempfile.mkstemp",
                   "tempfile.mkdtemp"):
        # shutil.rmtree removes entries by name relative to an open folder (dir_fd): resolve those names
        dir_fd = args[-1] if event in ("os.remove", "os.rmdir", "os.mkdir") and isinstance(args[-1], int) else None
        base = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None and dir_fd >= 0 else None
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)):
                p = os.fsdecode(a)
                events.append([event, os.path.join(base, p) if base and not os.path.isabs(p) else p])

sys.path.insert(0, tests)
import torch
torch.set_num_threads(1)
from conftest import MINI_RUN, make_tiny_clip
import capt.experiments as E
from capt.plans import Job
from capt.train import TrainConfig
tiny = make_tiny_clip()
E._clip = lambda model, pretrained, device: tiny
tc = TrainConfig(epochs=1, batch_size=8, lr=0.05, eps=4 / 255, alpha=2 / 255, steps=1, checkpoint_every=1)
runs = E.grid(["zeroshot", "capt"], [1], [1], "mini_shape", train=tc, **{**MINI_RUN, "depth": 2})
sys.addaudithook(hook)
exp = E.Experiment(out, progress=True, batch_size=64, device="cpu")
rows = exp.run_jobs([Job(r, ("mini_shape",), ("clean", {"name": "pgd", "eps": 4 / 255, "steps": 1}), 16) for r in runs])
from capt.report import save_rows
save_rows(rows, os.path.join(out, "tables", "rows.csv"))
on[0] = False  # the log itself is not part of what is checked
with open(log, "w") as fh:
    json.dump(events, fh)
"""


def test_an_experiment_writes_only_inside_its_out_dir(tmp_path):
    out, cwd, home, log = tmp_path / "out", tmp_path / "cwd", tmp_path / "home", tmp_path / "events.json"
    cwd.mkdir()
    home.mkdir()
    # Importing torchvision (open_clip needs it) imports torch._dynamo, which makes torch's compile cache
    # folder under TMPDIR before any of our code runs: point that one elsewhere, so TMPDIR audits only us.
    env = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(tmp_path / "tmpdir"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "torch-import-cache")}
    (tmp_path / "tmpdir").mkdir()
    r = subprocess.run([sys.executable, "-c", AUDIT_CHILD, out, log, REPO / "tests"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    events = json.loads(log.read_text())
    kinds = {e[0] for e in events}
    assert {"open", "os.rename", "tempfile.mkstemp", "os.mkdir"} <= kinds, f"the audit hook missed writes: {kinds}"
    assert any(e[0] == "os.rename" and e[1].endswith("checkpoint.pt") for e in events)
    # The one place outside out_dir an experiment may write is the workspace's documented disk cache of
    # rendered mini-world splits (whether it writes there depends on which tests filled it first).
    from capt.data.disk_cache import cache_dir

    def inside(p, folder) -> bool:
        p, folder = os.path.realpath(p), os.path.realpath(folder)
        return p == folder or p.startswith(folder + os.sep)

    cache = cache_dir()
    outside = sorted({f"{ev}: {p}" for ev, p in events
                      if not inside(p, out) and not (cache is not None and inside(p, cache))})
    assert outside == [], "writes outside out_dir and the disk cache:\n" + "\n".join(outside)
    cached = {os.path.basename(p) for ev, p in events if ev == "os.rename" and cache is not None and inside(p, cache)}
    assert all(n.endswith((".npz", ".tmp")) for n in cached), f"the cache holds only rendered splits: {cached}"
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == [] and list((tmp_path / "tmpdir").iterdir()) == []
    assert (out / "results.csv").exists() and (out / "tables" / "rows.csv").exists()
