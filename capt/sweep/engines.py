"""The executors a sweep submits through: local workers (one per GPU, or CPU workers; a fresh process per
task through submitit, or persistent processes, :mod:`.pool`), a SLURM job array, or in-process (debug)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..validation import check_choice, check_number

ENGINES = ("local", "pool", "slurm", "debug")
MAX_TIMEOUTS = 3  # submitit requeues a Checkpointable task this many times after a timeout/preemption
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default is 2 minutes; a local sweep has no time limit

def visible_gpus() -> list[int]:
    """The GPU indices a local sweep may hand out (honouring this process's ``CUDA_VISIBLE_DEVICES``)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [s.strip() for s in env.split(",") if s.strip()]
        if not all(s.isdigit() for s in ids):
            raise ValueError(f"CUDA_VISIBLE_DEVICES={env!r}: a local sweep needs integer GPU indices")
        return [int(s) for s in ids]
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # pragma: no cover - no usable CUDA
        return []


@dataclass
class Engine:
    """Executors to submit through. ``slots``: one executor per local worker, each running at most one
    task at a time; otherwise one executor that takes every task at once (SLURM queues them)."""

    name: str
    executors: list
    slots: bool
    threads: int | None
    describe: str = ""
    workers: list = field(default_factory=list)  # per slot: the GPU ids it sees


def make_engine(engine: str, folder: str | os.PathLike, workers: int | None = None, gpus_per_worker: int = 1,
                cpus_per_worker: int | None = None, partition: str | None = None, timeout_min: int | None = None,
                mem_gb: float | None = None, name: str = "capt-sweep", gpus: Sequence[int] | None = None) -> Engine:
    """The submitit executors for ``engine`` ('local', 'slurm' or 'debug'), logs under ``folder``."""
    import submitit

    check_choice("engine", engine, ENGINES)
    check_number("gpus_per_worker", gpus_per_worker, low=0, integer=True)
    if workers is not None:
        check_number("workers", workers, low=1, integer=True)
    if cpus_per_worker is not None:
        check_number("cpus_per_worker", cpus_per_worker, low=1, integer=True)
    if timeout_min is not None:
        check_number("timeout_min", timeout_min, low=1, integer=True)
    logs = Path(folder) / "%j"
    if engine == "debug":
        return Engine("debug", [submitit.AutoExecutor(logs, cluster="debug")], slots=False,
                      threads=cpus_per_worker, describe="in-process (submitit debug executor)")
    if engine == "slurm":
        ex = submitit.AutoExecutor(logs, cluster="slurm", slurm_max_num_timeout=MAX_TIMEOUTS)
        params = dict(name=name, timeout_min=timeout_min or 12 * 60, gpus_per_node=gpus_per_worker,
                      cpus_per_task=cpus_per_worker or 8, tasks_per_node=1, nodes=1)
        if mem_gb is not None:
            params["mem_gb"] = mem_gb
        if partition:
            params["slurm_partition"] = partition
        if workers:
            params["slurm_array_parallelism"] = workers
        ex.update_parameters(**params)
        return Engine("slurm", [ex], slots=False, threads=cpus_per_worker or 8,
                      describe=f"SLURM job array ({gpus_per_worker} GPU, {params['cpus_per_task']} CPUs per task"
                               f"{', partition ' + partition if partition else ''}"
                               f"{', at most %d at once' % workers if workers else ''})")
    # local: one executor per worker, so each worker gets its own GPUs through CUDA_VISIBLE_DEVICES
    gpus = visible_gpus() if gpus is None else list(gpus)
    ncpu = os.cpu_count() or 1
    if gpus and gpus_per_worker > 0:
        most = len(gpus) // gpus_per_worker
        if most < 1:
            raise ValueError(f"{gpus_per_worker} GPUs per worker, but only {len(gpus)} visible ({gpus})")
        workers = workers or most
        if workers > most:
            raise ValueError(f"{workers} workers x {gpus_per_worker} GPUs need {workers * gpus_per_worker} GPUs; "
                             f"{len(gpus)} are visible ({gpus}); use --workers {most} or fewer")
        groups = [gpus[i * gpus_per_worker:(i + 1) * gpus_per_worker] for i in range(workers)]
    else:
        # persistent one-thread workers use small CPU models best; submitit's fresh processes get two threads
        workers = workers or (ncpu if engine == "pool" else max(1, ncpu // 2))
        groups = [[] for _ in range(workers)]
    threads = cpus_per_worker or max(1, ncpu // workers)
    where = (f"{workers} local GPU workers ({', '.join('GPU ' + ','.join(map(str, g)) for g in groups)})" if gpus and
             gpus_per_worker > 0 else f"{workers} local CPU workers, {threads} thread{'s' if threads > 1 else ''} each")
    if engine == "pool":
        from .pool import PoolSlot

        return Engine("pool", [PoolSlot(threads, tuple(g)) for g in groups], slots=True, threads=threads,
                      describe=f"{where}, persistent processes", workers=groups)
    executors = []
    for g in groups:
        ex = submitit.LocalExecutor(logs, max_num_timeout=MAX_TIMEOUTS)
        # gpus_per_node=0 makes submitit hide every GPU (CUDA_VISIBLE_DEVICES=""): CPU workers stay on CPU.
        ex.update_parameters(timeout_min=timeout_min or LOCAL_TIMEOUT_MIN, gpus_per_node=len(g),
                             visible_gpus=tuple(g), tasks_per_node=1, nodes=1)
        executors.append(ex)
    return Engine("local", executors, slots=True, threads=threads, describe=where, workers=groups)
