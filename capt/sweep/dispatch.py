"""Dispatch: tasks through an engine, at most one per local worker at a time, each failed task
submitted again a bounded number of times."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..validation import check_number
from .engines import Engine
from .tasks import Task
from .worker import TaskRunner

@dataclass
class Outcome:
    task: Task
    status: str  # "done" or "failed"
    attempts: int
    result: dict | None = None
    error: str | None = None
    job_ids: list = field(default_factory=list)


def _failure(job) -> str | None:
    """None when ``job`` produced a result, else why not."""
    from submitit.local.local import LocalJob

    if isinstance(job, LocalJob) and not job.paths.result_pickle.exists():
        # The worker died without writing a result (SIGKILL, out of memory, ...); no need to wait for one.
        return (f"job {job.job_id} ended without a result (worker killed or crashed); "
                f"logs: {job.paths.stdout.parent}")
    err = job.exception()
    return None if err is None else str(err)


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def submit_all(engine: Engine, runner: Callable, tasks: Sequence[Task]) -> list:
    """Submit ``tasks`` through the engine's one executor: as one job array on SLURM."""
    ex = engine.executors[0]
    if engine.name == "slurm" and len(tasks) > 1:
        with ex.batch():
            jobs = [ex.submit(runner, t) for t in tasks]
        return jobs
    return [ex.submit(runner, t) for t in tasks]


def dispatch(tasks: Sequence[Task], engine: Engine, runner: Callable | None = None, retries: int = 2,
             poll_s: float = 1.0, log: Callable[[str], None] = print,
             on_submit: Callable | None = None) -> list[Outcome]:
    """Run ``tasks`` through ``engine``; a task that fails is submitted again, at most ``retries`` times.

    With local slots, each worker holds at most one task; the next pending task goes to the first worker
    that frees up. Otherwise all pending tasks are submitted at once (a job array on SLURM). Interrupting
    this call (Ctrl-C) cancels the jobs it started; running it again continues where they stopped.
    """
    check_number("retries", retries, low=0, integer=True)
    runner = runner or TaskRunner(engine.threads)
    queue = deque((t, 1) for t in tasks)
    free = list(range(len(engine.executors))) if engine.slots else []
    running: list[list] = []  # [job, task, attempt, slot]
    ids: dict[str, list] = {}
    outcomes: dict[str, Outcome] = {}
    total = len(tasks)

    def submitted(job, task, attempt, slot):
        running.append([job, task, attempt, slot])
        ids.setdefault(task.key, []).append(job.job_id)
        where = f" on worker {slot}" if slot is not None else ""
        log(f"submitted {task.name}{where} (job {job.job_id}{', attempt %d' % attempt if attempt > 1 else ''})")
        if on_submit is not None:
            on_submit(job, task, attempt)

    try:
        while queue or running:
            if engine.slots:
                while queue and free:
                    slot = free.pop(0)
                    task, attempt = queue.popleft()
                    submitted(engine.executors[slot].submit(runner, task), task, attempt, slot)
            elif queue:
                batch = list(queue)
                queue.clear()
                jobs = submit_all(engine, runner, [t for t, _ in batch])
                for job, (task, attempt) in zip(jobs, batch):
                    submitted(job, task, attempt, None)
            finished = []
            for entry in running:
                try:
                    if entry[0].done():
                        finished.append((entry, None))
                except Exception as exc:  # the debug executor runs the task inside done()
                    finished.append((entry, f"{type(exc).__name__}: {exc}"))
            for entry, error in finished:
                running.remove(entry)
                job, task, attempt, slot = entry
                if slot is not None:
                    free.append(slot)
                error = error or _failure(job)
                if error is None:
                    result = job.result()
                    outcomes[task.key] = Outcome(task, "done", attempt, result, None, ids[task.key])
                    log(f"[{len(outcomes)}/{total}] done {task.name}: {result.get('rows')} rows in "
                        f"{result.get('seconds', 0):.1f}s")
                elif attempt <= retries:
                    log(f"FAILED {task.name} (attempt {attempt}); retrying ({retries - attempt + 1} left): "
                        f"{_tail(error, 3)}")
                    queue.append((task, attempt + 1))
                else:
                    outcomes[task.key] = Outcome(task, "failed", attempt, None, error, ids[task.key])
                    log(f"[{len(outcomes)}/{total}] GAVE UP on {task.name} after {attempt} attempts:\n"
                        f"{_tail(error)}")
            if running and not finished:
                time.sleep(poll_s)
    except BaseException:
        for job, *_ in running:
            try:
                job.cancel(check=False)
            except Exception:  # pragma: no cover - best effort
                pass
        raise
    return [outcomes[t.key] for t in tasks if t.key in outcomes]
