"""Sweeps: a whole profile expanded into independent runs and dispatched through submitit.

A profile names, per notebook, the runs and evaluations that notebook computes (``capt.plans``). A sweep
expands all of them at once, merges what belongs to the same training run into one :class:`Task` (one
run trains once and then performs every evaluation any notebook asks of it), drops the tasks whose rows
are all in the results store already, and hands the rest to an existing engine:

- ``local``: submitit's local executor, one worker per visible GPU (``CUDA_VISIBLE_DEVICES`` set per
  worker), or N CPU workers; at most one task per worker at a time, each in a fresh process;
- ``pool``: the same slots as persistent processes (:mod:`.pool`): imports, the checkpoint and the
  rendered world are loaded once per worker, not once per task (what ``capt book`` uses on a CPU);
- ``slurm``: submitit's SLURM executor, every pending task in one job array;
- ``debug``: submitit's in-process executor (tasks run one after the other in this process; pdb on error).

Robustness comes from the layers below and one bounded loop here:

- every run is keyed by its parameters (``RunSpec.key``); a task re-run after a crash resumes training
  from ``runs/<key>/checkpoint.pt`` and evaluates only the (dataset, attack) pairs missing from the store;
- a task that ends without a result (an exception, a killed process, a lost node) is submitted again, at
  most ``retries`` times, by :func:`dispatch`; a task that hits its time limit or is preempted on SLURM
  is requeued by submitit itself (the task is ``Checkpointable``) up to ``MAX_TIMEOUTS`` times;
- all workers append to the one ``results.csv`` the notebooks read, through ``ResultStore.add``: a lock
  file serialises writers, rows already present are dropped, and the file is replaced atomically.

The package, one job per module: ``tasks`` (a profile expanded into tasks), ``cost`` (the work model),
``done`` (which tasks the store already holds), ``worker`` (what a worker runs), ``engines`` (submitit
executors), ``dispatch`` (submission and bounded retries); :func:`sweep` here ties them together.

The notebooks then find every row they need in the store and only render (``capt run`` after
``capt sweep`` trains and evaluates nothing).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..experiments import Experiment
from .cost import FWD_BWD, _work_by_task, attack_passes, dataset_size, total_workload, workload
from .dispatch import Outcome, dispatch, submit_all
from .done import split_done
from .engines import ENGINES, MAX_TIMEOUTS, Engine, make_engine, visible_gpus
from .tasks import Evaluation, Task, expand
from .worker import TaskRunner

__all__ = ["ENGINES", "Engine", "Evaluation", "Experiment", "FWD_BWD", "MAX_TIMEOUTS", "Outcome", "SweepReport",
           "Task", "TaskRunner", "attack_passes", "dataset_size", "dispatch", "expand", "make_engine", "split_done",
           "submit_all", "sweep", "total_workload", "visible_gpus", "workload"]


@dataclass
class SweepReport:
    tasks: int
    skipped: int
    outcomes: list
    seconds: float
    folder: str

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o.status != "done"]

    @property
    def retried(self) -> int:
        return sum(o.attempts - 1 for o in self.outcomes)

    def summary(self) -> str:
        done = [o for o in self.outcomes if o.status == "done"]
        secs = sorted(o.result["seconds"] for o in done)
        line = (f"sweep: {self.tasks} runs; {self.skipped} already complete, {len(done)} computed, "
                f"{len(self.failed)} failed, {self.retried} resubmissions; {self.seconds:.0f}s wall")
        if secs:
            line += (f"; per run {secs[len(secs) // 2]:.1f}s median, {sum(secs) / len(secs):.1f}s mean, "
                     f"{sum(secs):.0f}s in all")
        return line

    def to_json(self) -> dict:
        return {"tasks": self.tasks, "skipped": self.skipped, "seconds": self.seconds, "folder": self.folder,
                "outcomes": [{"key": o.task.key, "name": o.task.name, "status": o.status, "attempts": o.attempts,
                              "job_ids": o.job_ids, "result": o.result, "error": o.error} for o in self.outcomes]}


def default_log_dir(tasks: Sequence[Task]) -> Path:
    return Path(tasks[0].out_dir) / "sweep" if tasks else Path("outputs") / "sweep"


def sweep(profile: str | os.PathLike | dict, only: Iterable[str] | None = None, overrides: dict | None = None,
          engine: str = "local", workers: int | None = None, gpus_per_worker: int = 1,
          cpus_per_worker: int | None = None, retries: int = 2, partition: str | None = None,
          timeout_min: int | None = None, mem_gb: float | None = None, log_dir: str | os.PathLike | None = None,
          poll_s: float = 1.0, log: Callable[[str], None] = print, on_submit: Callable | None = None,
          dry_run: bool = False) -> SweepReport:
    """Expand ``profile`` into runs, skip the complete ones, and run the rest through ``engine``."""
    t0 = time.perf_counter()
    tasks = expand(profile, only, overrides)
    pending, done = split_done(tasks)
    folder = Path(log_dir) if log_dir is not None else default_log_dir(tasks)
    rows = sum(t.n_evaluations for t in tasks)
    log(f"{len(tasks)} runs ({sum(t.run.trains for t in tasks)} trained), {rows} result rows; "
        f"{len(done)} complete in the store, {len(pending)} to run")
    # Largest runs first: on a busy queue the longest runs would otherwise set the end of the sweep.
    work = _work_by_task(pending)
    pending.sort(key=lambda t: -work[t.key])
    if dry_run:
        w = total_workload(pending)
        log(f"work left, in forward passes of one image: {w['train_image']:.3g} training + {w['eval_image']:.3g} "
            f"evaluation; of one class prompt (text tower): {w['train_text'] + w['eval_text']:.3g}")
    if dry_run or not pending:
        return SweepReport(len(tasks), len(done), [], time.perf_counter() - t0, str(folder))
    eng = make_engine(engine, folder, workers=workers, gpus_per_worker=gpus_per_worker,
                      cpus_per_worker=cpus_per_worker, partition=partition, timeout_min=timeout_min, mem_gb=mem_gb)
    log(f"engine: {eng.describe}; logs in {folder}; up to {retries} retries per run")
    try:
        outcomes = dispatch(pending, eng, retries=retries, poll_s=poll_s, log=log, on_submit=on_submit)
    finally:
        for ex in eng.executors:  # persistent workers (the pool engine) end with the sweep
            getattr(ex, "close", lambda: None)()
    report = SweepReport(len(tasks), len(done), outcomes, time.perf_counter() - t0, str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (folder / f"report-{stamp}.json").write_text(json.dumps(report.to_json(), indent=1, default=str))
    log(report.summary())
    return report
