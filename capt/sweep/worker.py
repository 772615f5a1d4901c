"""What a worker process executes for one task."""

from __future__ import annotations

import os
import socket
import time

from submitit.helpers import Checkpointable

from ..experiments import Experiment
from .tasks import Task

class TaskRunner(Checkpointable):
    """What a worker executes: train the task's run (or resume it) and add its missing rows to the store.

    ``Checkpointable``: on a time limit or a preemption submitit requeues the same call; the checkpoint
    and the store make the requeued call continue where the last one stopped.
    """

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __call__(self, task: Task) -> dict:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        exp = Experiment(task.out_dir, data_root=task.data_root, device=task.device, progress=False)
        rows = 0
        for e in task.evaluations:
            rows += len(exp.evaluate(task.run, e.datasets, e.attacks, e.max_n))
            print(f"{task.name}: {len(e.datasets)} datasets x {len(e.attacks)} attacks done "
                  f"({time.perf_counter() - t0:.1f}s)", flush=True)
        return {"key": task.key, "name": task.name, "rows": rows, "seconds": time.perf_counter() - t0,
                "host": socket.gethostname(), "pid": os.getpid(), "device": exp.device,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "threads": torch.get_num_threads()}
