"""The results store: one CSV of tidy rows per output folder, written atomically, keyed by run.

Rows carry a ``run_key`` (the hash of everything that defines a training run) and an ``eval_key``
(the dataset, class subset and attack). A finished (run, eval) pair is never computed twice; a crash
leaves the previous complete file, never a truncated one. Concurrent writers on one machine are
serialised with a lock file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .io import atomic_path


def stable_key(obj) -> str:
    """A short hash of a JSON-able object, independent of dict ordering and of the Python version."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def _lock(path: Path, timeout: float = 600.0):
    lock = path.with_name(path.name + ".lock")
    start = time.monotonic()
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            # A lock older than the timeout was left by a killed writer: take it over.
            try:
                if time.time() - lock.stat().st_mtime > timeout:
                    lock.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"results store {path} stayed locked for {timeout:.0f}s ({lock})")
            time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)
        lock.unlink(missing_ok=True)


class ResultStore:
    """``results.csv`` in ``folder``: ``add(rows)`` appends atomically, ``done(...)`` says what exists."""

    def __init__(self, folder: str | Path, name: str = "results.csv"):
        self.folder = Path(folder)
        self.path = self.folder / name

    def read(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame()
        try:
            return pd.read_csv(self.path)
        except Exception as exc:
            raise ValueError(f"results file {self.path} is unreadable ({type(exc).__name__}: {exc}); "
                             "move it away to start a fresh store") from None

    def keys(self) -> set[tuple[str, str]]:
        df = self.read()
        if df.empty:
            return set()
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
