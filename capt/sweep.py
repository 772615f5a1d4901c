"""Sweeps: a whole profile expanded into independent runs and dispatched through submitit.

A profile names, per notebook, the runs and evaluations that notebook computes (``capt.plans``). A sweep
expands all of them at once, merges what belongs to the same training run into one :class:`Task` (one
run trains once and then performs every evaluation any notebook asks of it), drops the tasks whose rows
are all in the results store already, and hands the rest to an existing engine:

- ``local``: submitit's local executor, one worker per visible GPU (``CUDA_VISIBLE_DEVICES`` set per
  worker), or N CPU workers; at most one task per worker at a time;
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

The notebooks then find every row they need in the store and only render (``capt run`` after
``capt sweep`` trains and evaluates nothing).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from submitit.helpers import Checkpointable

from .book import Settings
from .experiments import Experiment, RunSpec
from .plans import PLANS, Job
from .profiles import (NOTEBOOKS, load_profile, notebook_defaults, notebook_names, parameters_for,
                       select_notebooks)
from .results import ResultStore
from .validation import check_choice, check_number

ENGINES = ("local", "slurm", "debug")
MAX_TIMEOUTS = 3  # submitit requeues a Checkpointable task this many times after a timeout/preemption
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default is 2 minutes; a local sweep has no time limit


# -- what to run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """Evaluate on ``datasets`` under ``attacks`` (on a seeded subset of ``max_n`` images, or all)."""

    datasets: tuple
    attacks: tuple
    max_n: int | None = None

    @property
    def ident(self) -> tuple:
        return (tuple(self.datasets), tuple(map(str, self.attacks)), self.max_n)


@dataclass(frozen=True)
class Task:
    """One training run and every evaluation the profile needs of it: the unit a worker executes."""

    run: RunSpec
    evaluations: tuple  # of Evaluation
    out_dir: str  # absolute: the results store and runs/ folder the notebooks read
    data_root: str | None = None
    device: str | None = None
    notebooks: tuple = ()  # which notebooks asked for it (for the log)

    @property
    def key(self) -> str:
        return self.run.key

    @property
    def name(self) -> str:
        r = self.run
        if not r.trains:
            return f"{r.method}-{r.key[:8]}"
        return f"{r.method}-{r.source.label}-{r.shots}shot-seed{r.seed}-{r.key[:8]}"

    @property
    def n_evaluations(self) -> int:
        """How many (dataset, attack) result rows the task produces."""
        return sum(len(e.datasets) * len(e.attacks) for e in self.evaluations)

    def jobs(self) -> list[Job]:
        """The task as plan jobs (what ``Experiment.run_jobs`` takes), e.g. to run it in-process."""
        return [Job(self.run, tuple(e.datasets), tuple(e.attacks), e.max_n) for e in self.evaluations]


def resolve_dir(path: str | os.PathLike | None) -> str | None:
    """A notebook's path parameter (``out_dir``, ``data_root``) as the notebooks see it: relative paths
    are relative to ``notebooks/`` (papermill runs them there), so a sweep writes the store they read."""
    if path is None:
        return None
    p = Path(os.path.expanduser(str(path)))
    return str(p if p.is_absolute() else (NOTEBOOKS / p).resolve())


class _PlanSettings(Settings):
    """:class:`capt.book.Settings` without loading the model: expanding a profile needs only parameters,
    so the paper profile expands on a laptop (no weights, no GPU, no data); workers load the model."""

    def check_model(self) -> None:
        pass


def plan_settings(profile: str | os.PathLike | dict, notebook: str, overrides: dict | None = None) -> Settings:
    """The validated Settings ``notebook`` runs with under ``profile`` (as ``settings_for``, minus the
    model check)."""
    data = load_profile(profile) if not isinstance(profile, dict) else profile
    params = {**notebook_defaults(notebook), **parameters_for(data, notebook, overrides)}
    return _PlanSettings.from_namespace(params)


def expand(profile: str | os.PathLike | dict, only: Iterable[str] | None = None,
           overrides: dict | None = None) -> list[Task]:
    """Every task of ``profile`` (the notebooks in ``only``, or all): one per (results folder, run key),
    in the order the notebooks first ask for them."""
    data = load_profile(profile) if not isinstance(profile, dict) else profile
    names = select_notebooks(data, only)
    if only:
        planless = [n for n in only if n not in PLANS]
        if planless:
            raise ValueError(f"notebooks {planless} train and evaluate nothing (no plan in capt.plans.PLANS); "
                             f"notebooks with runs: {', '.join(n for n in notebook_names(data) if n in PLANS)}")
    names = [n for n in names if n in PLANS]  # the others (e.g. a tour of the data) have no runs
    groups: dict[tuple, dict] = {}
    for nb in names:
        S = plan_settings(data, nb, overrides)
        out_dir, data_root = resolve_dir(S.out_dir), resolve_dir(S.data_root)
        for job in PLANS[nb](S):
            g = groups.setdefault((out_dir, job.run.key), {
                "run": job.run, "evals": {}, "out_dir": out_dir, "data_root": data_root, "device": S.device,
                "notebooks": []})
            if (g["data_root"], g["device"]) != (data_root, S.device):
                raise ValueError(f"run {job.run.key} ({job.run.method}) writes to {out_dir} from notebooks with "
                                 f"different data_root/device ({g['notebooks'][0]} and {nb}); give them one value")
            ev = Evaluation(tuple(job.datasets), tuple(job.attacks), job.max_n)
            g["evals"].setdefault(ev.ident, ev)
            if nb not in g["notebooks"]:
                g["notebooks"].append(nb)
    return [Task(g["run"], tuple(g["evals"].values()), g["out_dir"], g["data_root"], g["device"],
                 tuple(g["notebooks"])) for g in groups.values()]


# -- how much work -----------------------------------------------------------------------------------------
#: A forward+backward pass (gradient to the input, frozen weights) in units of one forward pass: torch's
#: FLOP counter gives 17.45 / 5.89 GFLOP = 2.96 for open_clip's ViT-B-32 at 224 px (see book/sweeps.md).
FWD_BWD = 3.0
_TEXT_PROMPTED = ("text", "ivlp", "maple")
_IMAGE_PROMPTED = ("vision", "ivlp", "maple")


def attack_passes(attack, robust: float = 1.0) -> float:
    """Forward-pass equivalents per image of one evaluation attack, from the table of attack kinds
    (:func:`capt.attacks.attack_cost`) plus the final forward pass. ``robust``: the fraction of images
    expected to survive (the active set of ``aa`` and the later stages of ``autoattack`` follow it);
    1.0 gives an upper bound."""
    from .attacks import attack_cost
    from .evaluate import as_attack_spec

    return attack_cost(as_attack_spec(attack), robust) * FWD_BWD + 1.0


def dataset_size(ref) -> dict:
    """{"train", "test", "classes"} of a dataset (or its base/new half): CoOp's counts for the real
    datasets (no files needed), the generated sizes for the mini world."""
    import math

    from .data import get_spec, load_dataset
    from .experiments import as_ref

    ref = as_ref(ref)
    spec = get_spec(ref.name)
    if spec.kind == "real":
        from .data.real import REAL_DATASETS

        info = REAL_DATASETS[ref.name]
        size = {"train": info.expected.get("train", 0), "test": info.expected["test"], "classes": info.n_classes}
    else:
        test = load_dataset(ref.name, "test")
        train = len(load_dataset(ref.name, "train")) if "train" in spec.splits else 0
        size = {"train": train, "test": len(test), "classes": test.num_classes}
    if ref.classes != "all":
        c = size["classes"]
        part = math.ceil(c / 2) if ref.classes == "base" else c - math.ceil(c / 2)
        size = {"train": size["train"] * part // c, "test": size["test"] * part // c, "classes": part}
    return size


def workload(task: Task, sizes: Callable = dataset_size) -> dict:
    """The task's compute, in forward passes of one image (``image``) and of one class prompt through the
    text tower (``text``), for training and evaluation: the basis of the sweep's GPU-hour estimate."""
    import math

    from .methods import get_method

    run = task.run
    out = {"train_image": 0.0, "train_text": 0.0, "eval_image": 0.0, "eval_text": 0.0}
    if run.trains:
        m = get_method(run.method, **dict(run.objective))
        src = sizes(run.source)
        n = src["train"] if run.shots == "all" else min(src["train"], run.shots * src["classes"])
        cfg = run.train
        step = (cfg.steps * FWD_BWD if m.adversarial else 0.0) + \
            (2 if m.objective.needs_clean else 1) * (FWD_BWD if m.prompt in _IMAGE_PROMPTED else 1.0)
        out["train_image"] = cfg.epochs * n * step + (n if m.objective.needs_frozen else 0)
        steps = cfg.epochs * math.ceil(n / cfg.batch_size)
        out["train_text"] = steps * src["classes"] * (FWD_BWD if m.prompt in _TEXT_PROMPTED else 1.0)
    for e in task.evaluations:
        for d in e.datasets:
            size = sizes(d)
            n = size["test"] if e.max_n is None else min(size["test"], e.max_n)
            out["eval_image"] += n * sum(attack_passes(a) for a in e.attacks)
            out["eval_text"] += size["classes"] * len(e.attacks)
    return out


def _size_cache() -> Callable:
    """:func:`dataset_size` read once per dataset (a profile names the same ones many times)."""
    import functools

    from .experiments import as_ref

    cached = functools.lru_cache(maxsize=None)(dataset_size)
    return lambda d: cached(as_ref(d))


def total_workload(tasks: Sequence[Task]) -> dict:
    """:func:`workload` summed over ``tasks``."""
    sizes, out = _size_cache(), dict.fromkeys(("train_image", "train_text", "eval_image", "eval_text"), 0.0)
    for t in tasks:
        for k, v in workload(t, sizes).items():
            out[k] += v
    return out


def _work_by_task(tasks: Sequence[Task]) -> dict:
    sizes = _size_cache()
    return {t.key: sum(workload(t, sizes).values()) for t in tasks}


# -- what is done ----------------------------------------------------------------------------------------
class _Missing(Exception):
    pass


class _Snapshot(ResultStore):
    """A read-only view of a store, read once (checking a thousand tasks reads the file once)."""

    def __init__(self, folder):
        super().__init__(folder)
        self._rows = ResultStore.read(self)
        self._keys = ResultStore.keys(self)

    def read(self):
        return self._rows

    def keys(self):
        return self._keys

    def add(self, rows):  # pragma: no cover - the probe never writes
        raise RuntimeError("a snapshot of the results store is read-only")


class _Probe(Experiment):
    """An Experiment that may only read: ``evaluate`` asks for the trained model exactly when a row is
    missing, and the probe answers that by raising. No model, data or device is touched."""

    def __init__(self, out_dir):
        super().__init__(out_dir, device="cpu", progress=False)
        self.store = _Snapshot(out_dir)

    def trained(self, spec):
        raise _Missing(spec.key)

    def complete(self, task: Task) -> bool:
        try:
            for e in task.evaluations:
                self.evaluate(task.run, e.datasets, e.attacks, e.max_n)
        except _Missing:
            return False
        return True


def split_done(tasks: Sequence[Task]) -> tuple[list[Task], list[Task]]:
    """(pending, done): a task is done when every row it produces is in its results store."""
    probes: dict[str, _Probe] = {}
    pending, done = [], []
    for t in tasks:
        probe = probes.get(t.out_dir) or probes.setdefault(t.out_dir, _Probe(t.out_dir))
        (done if probe.complete(t) else pending).append(t)
    return pending, done


# -- the worker -----------------------------------------------------------------------------------------
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


# -- engines --------------------------------------------------------------------------------------------
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
        workers = workers or max(1, ncpu // 2)
        groups = [[] for _ in range(workers)]
    threads = cpus_per_worker or max(1, ncpu // workers)
    executors = []
    for g in groups:
        ex = submitit.LocalExecutor(logs, max_num_timeout=MAX_TIMEOUTS)
        # gpus_per_node=0 makes submitit hide every GPU (CUDA_VISIBLE_DEVICES=""): CPU workers stay on CPU.
        ex.update_parameters(timeout_min=timeout_min or LOCAL_TIMEOUT_MIN, gpus_per_node=len(g),
                             visible_gpus=tuple(g), tasks_per_node=1, nodes=1)
        executors.append(ex)
    what = (f"{workers} local GPU workers ({', '.join('GPU ' + ','.join(map(str, g)) for g in groups)})" if gpus and
            gpus_per_worker > 0 else f"{workers} local CPU workers, {threads} threads each")
    return Engine("local", executors, slots=True, threads=threads, describe=what, workers=groups)


# -- dispatch -------------------------------------------------------------------------------------------
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


# -- the whole thing --------------------------------------------------------------------------------------
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
    outcomes = dispatch(pending, eng, retries=retries, poll_s=poll_s, log=log, on_submit=on_submit)
    report = SweepReport(len(tasks), len(done), outcomes, time.perf_counter() - t0, str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (folder / f"report-{stamp}.json").write_text(json.dumps(report.to_json(), indent=1, default=str))
    log(report.summary())
    return report
