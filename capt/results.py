"""The results store: one CSV of tidy rows per output folder, written atomically, keyed by run.

Rows carry a ``run_key`` (the hash of everything that defines a training run) and an ``eval_key``
(the dataset, class subset and attack). A finished (run, eval) pair is never computed twice; a crash
leaves the previous complete file, never a truncated one. Concurrent writers on one machine are
serialised with a lock file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path

MASK_COLUMN = "correct_mask"  # per-image outcomes of a row: which evaluated images it got right


def encode_mask(correct) -> str:
    """Per-image outcomes (a boolean sequence, in the evaluated images' order) as compact text for a
    CSV cell: base64 of the packed bits. :func:`decode_mask` inverts it given the image count."""
    bits = np.asarray(correct, dtype=bool).ravel()
    return base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode("ascii")


def decode_mask(text: str, n: int) -> np.ndarray:
    """The boolean outcomes of ``n`` images from :func:`encode_mask`'s text (a clear error if it does not fit)."""
    try:
        raw = np.frombuffer(base64.b64decode(str(text), validate=True), dtype=np.uint8)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"per-image outcome mask is not valid base64 ({exc}); the results row is corrupt") from None
    if len(raw) != (int(n) + 7) // 8:
        raise ValueError(f"per-image outcome mask holds {len(raw) * 8} bits but the row evaluated {n} images; "
                         "the results row is corrupt")
    return np.unpackbits(raw, bitorder="little")[: int(n)].astype(bool)


def stable_key(obj) -> str:
    """A short hash of a JSON-able object, independent of dict ordering and of the Python version."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _owner_is_dead(lock: Path) -> bool:
    """True when ``lock`` names a process of this host ("host:pid") that no longer exists."""
    try:
        host, _, pid = lock.read_text().strip().rpartition(":")
        pid = int(pid)
    except (OSError, ValueError):
        return False
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _place_lock(mine: Path, lock: Path) -> None:
    """Put ``lock`` in place already naming its owner (the content of ``mine``), in one atomic step that
    raises ``FileExistsError`` when a lock is there: a writer killed between creating a lock and naming
    itself would otherwise leave an empty lock that nobody could prove stale."""
    try:
        os.link(mine, lock)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: create-exclusive, then name the owner
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        try:
            os.write(fd, mine.read_bytes())
        finally:
            os.close(fd)


@contextmanager
def _lock(path: Path, timeout: float = 600.0):
    lock = path.with_name(path.name + ".lock")
    # this writer's name, written once; the file is per thread, the name per process (what liveness checks)
    mine = lock.with_name(f"{lock.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}")
    mine.write_text(f"{socket.gethostname()}:{os.getpid()}\n")
    start = time.monotonic()
    try:
        while True:
            try:
                _place_lock(mine, lock)
                break
            except FileExistsError:
                # A lock left by a killed writer (its process is gone, or it is older than the timeout): take it over.
                try:
                    if _owner_is_dead(lock) or time.time() - lock.stat().st_mtime > timeout:
                        lock.unlink(missing_ok=True)
                        continue
                except FileNotFoundError:
                    continue
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"results store {path} stayed locked for {timeout:.0f}s ({lock})")
                time.sleep(0.05)
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def upgrade(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of a store written before the ``eps_fraction`` and ``precision`` columns, completed: the fraction
    follows from eps, and every evaluation before that column ran in float32 (capt never autocasts)."""
    if frame.empty or "eps" not in frame.columns or {"eps_fraction", "precision"} <= set(frame.columns):
        return frame  # (rows without eps are not evaluations: nothing to complete)
    from .validation import eps_fraction

    frame = frame.copy()
    if "eps_fraction" not in frame.columns:
        frame.insert(list(frame.columns).index("eps") + 1, "eps_fraction", [eps_fraction(e) for e in frame["eps"]])
    if "precision" not in frame.columns:
        frame.insert(list(frame.columns).index("eps_fraction") + 1, "precision", "fp32")
    return frame


class ResultStore:
    """``results.csv`` in ``folder``: ``add(rows)`` appends atomically, ``done(...)`` says what exists."""

    def __init__(self, folder: str | Path, name: str = "results.csv"):
        self.folder = Path(folder)
        self.path = self.folder / name

    def read(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame()
        with open(self.path, "rb") as fh:  # pandas would read a cut-off last row as a row of NaNs
            fh.seek(max(0, self.path.stat().st_size - 1))
            if fh.read(1) not in (b"\n", b""):
                raise ValueError(f"results file {self.path} is truncated (it does not end with a complete row); "
                                 "move it away to start a fresh store")
        try:
            frame = pd.read_csv(self.path)
        except Exception as exc:
            raise ValueError(f"results file {self.path} is unreadable ({type(exc).__name__}: {exc}); "
                             "move it away to start a fresh store") from None
        return upgrade(frame)

    def keys(self) -> set[tuple[str, str]]:
        df = self.read()
        if df.empty:
            return set()
        if not {"run_key", "eval_key"} <= set(df.columns):
            raise ValueError(f"results file {self.path} has no run_key/eval_key columns: it is not a capt results "
                             "store; move it away to start a fresh store")
        return set(zip(df["run_key"].astype(str), df["eval_key"].astype(str)))

    def done(self, run_key: str, eval_key: str) -> bool:
        return (run_key, eval_key) in self.keys()

    def add(self, rows: pd.DataFrame) -> None:
        """Append rows; rows whose (run_key, eval_key, attack) already exist are dropped, not duplicated."""
        if rows.empty:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with _lock(self.path):
            old = self.read()
            both = pd.concat([old, rows], ignore_index=True) if not old.empty else rows
            both = both.drop_duplicates(subset=["run_key", "eval_key", "attack"], keep="first")
            with atomic_path(self.path) as tmp:
                both.to_csv(tmp, index=False)
