"""Persistent local worker processes behind the small job interface :func:`dispatch` uses.

submitit's local executor starts a fresh Python for every task: on the mini world that is ~11 s of
imports, checkpoint loading and world rendering per run, paid again by each of a book's ~60 runs. A
:class:`PoolSlot` keeps one spawned process alive for all the tasks it is given (one at a time), so
those costs are paid once per worker. On a 2-core CPU two one-thread workers finish the same work
about 1.4x sooner than one two-thread process (the mini CLIP's ops are too small to use two threads
well).

A worker that dies (SIGKILL, out of memory) fails only its own task; the slot starts a new process for
the next one, and :func:`dispatch` resubmits the task as it does for submitit's jobs.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool


def _start_worker(threads: int | None, gpus: tuple | None) -> None:
    import os

    if gpus is not None:  # before torch sees CUDA; () hides every GPU (a CPU worker stays on the CPU)
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    import torch

    if threads:
        torch.set_num_threads(threads)


class PoolJob:
    """One task on a slot: what dispatch asks of a submitit job."""

    def __init__(self, future, job_id: str, slot: "PoolSlot"):
        self._future, self.job_id, self._slot = future, job_id, slot

    def done(self) -> bool:
        return self._future.done()

    def result(self):
        return self._future.result()

    def exception(self):
        err = self._future.exception()
        if isinstance(err, BrokenProcessPool):
            return RuntimeError(f"worker process {self.job_id} ended without a result (killed or crashed)")
        return err

    def cancel(self, check: bool = False) -> None:
        if not self._future.cancel():
            self._slot.stop()  # a running task cannot be cancelled: stop its process


class PoolSlot:
    """One persistent worker process (spawned, so no state is shared with the parent's torch)."""

    def __init__(self, threads: int | None = None, gpus: tuple | None = None):
        self.threads, self.gpus = threads, gpus
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self.threads, self.gpus))

    def submit(self, fn, *args) -> PoolJob:
        if self._pool is None:
            self._pool = self._new_pool()
        try:
            future = self._pool.submit(fn, *args)
        except BrokenProcessPool:  # the last task's worker died: start a new one
            self._pool.shutdown(wait=False)
            self._pool = self._new_pool()
            future = self._pool.submit(fn, *args)
        pids = list(getattr(self._pool, "_processes", None) or {})  # started on the first submit
        return PoolJob(future, str(pids[0]) if pids else "pool", self)

    def stop(self) -> None:
        """End the worker now (Ctrl-C in the controller): ``shutdown`` alone would wait for its task."""
        if self._pool is None:
            return
        for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
            proc.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
