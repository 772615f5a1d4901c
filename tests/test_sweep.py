"""Sweeps: a profile expanded into one task per training run, dispatched through submitit, surviving a
killed worker, with every row in the store exactly once and the numbers of a sequential run."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

import capt.sweep as W
from capt.notebook import Settings
from capt.paths import workspace
from capt.results import ResultStore

MINI = Path(W.__file__).resolve().parents[1] / "assets" / "mini_clip.pt"
ID_COLUMNS = ["run_key", "eval_key", "attack", "dataset", "method", "shots", "seed", "n", "correct", "accuracy"]


# -- expansion ------------------------------------------------------------------------------------------
def test_paper_profile_expands_without_weights_or_data():
    tasks = W.expand("paper")
    keys = [t.key for t in tasks]
    assert len(keys) == len(set(keys)) == 1169  # each training run is one task (counted in book/sweeps.md)
    methods = Counter(t.run.method for t in tasks)
    assert methods["zeroshot"] == 1 and methods["capt"] == 178 and methods["apt"] == methods["trades_maple"] == 165
    # 02 asks 7 methods x 11 datasets x 4 shot levels x 3 seeds; 03/04/07 reuse its ImageNet 16-shot runs
    assert sum("02_in_distribution" in t.notebooks for t in tasks) == 7 * 11 * 4 * 3 + 1
    shared = next(t for t in tasks if t.run.method == "capt" and t.run.source.name == "imagenet"
                  and t.run.shots == 16 and t.run.seed == 1 and not t.run.objective_changes and t.run.depth == 9)
    assert {"02_in_distribution", "03_distribution_shift", "04_cross_dataset", "06_ablations",
            "07_attack_strength"} <= set(shared.notebooks)
    assert all(t.out_dir == str(workspace() / "outputs" / "paper") for t in tasks)
    # every main table: clean + PGD-100 on the full test sets, clean + aa on the 1,000-image subset
    assert sum(t.n_evaluations for t in tasks) == 7831
    evals = {(tuple(map(str, e.attacks)), e.max_n) for e in shared.evaluations}
    assert {a for attacks, n in evals if n == 1000 for a in attacks} >= {"clean", str(Settings().strong())}
    assert any(n is None and str(Settings().pgd()) in attacks for attacks, n in evals)


def test_relative_paths_resolve_like_the_notebooks(tmp_path, monkeypatch):
    """The sweep writes where the chapters read, from any working directory."""
    monkeypatch.chdir(tmp_path)
    task = W.expand("ci", only=["04_cross_dataset"])[0]
    assert task.out_dir == str(Settings.from_profile("ci", "04_cross_dataset").output)
    assert task.out_dir == str(workspace() / "outputs" / "ci")
    with pytest.raises(ValueError, match="unknown notebooks"):
        W.expand("ci", only=["08_nothing"])


# -- dispatch: bounded retries, at most one task per worker ----------------------------------------------
class FakeJob:
    def __init__(self, ex, task):
        self.ex, self.task, self.job_id = ex, task, f"fake{len(ex.log)}"
        self.polls = 0

    def done(self):
        self.polls += 1
        return self.polls > 1  # running for one poll

    def exception(self):
        n = sum(1 for t in self.ex.log if t == self.task.key)
        return RuntimeError("boom") if n <= self.ex.failures.get(self.task.key, 0) else None

    def result(self):
        return {"rows": 1, "seconds": 0.0}

    def cancel(self, check=True):
        pass


class FakeExecutor:
    def __init__(self, log, failures, busy):
        self.log, self.failures, self.busy = log, failures, busy

    def submit(self, fn, task):
        self.log.append(task.key)
        self.busy.append(self)
        assert self.busy.count(self) == 1, "a worker got a second task before its first ended"
        job = FakeJob(self, task)
        done = job.done

        def done_and_free():
            if done():
                if self in self.busy:
                    self.busy.remove(self)
                return True
            return False

        job.done = done_and_free
        return job


def test_dispatch_retries_a_bounded_number_of_times():
    tasks = W.expand("ci", only=["04_cross_dataset"])[:4]
    log, busy = [], []
    failures = {tasks[1].key: 1, tasks[2].key: 10}  # task 1 fails once, task 2 always
    engine = W.Engine("local", [FakeExecutor(log, failures, busy) for _ in range(2)], slots=True, threads=1)
    out = W.dispatch(tasks, engine, runner=lambda t: None, retries=2, poll_s=0, log=lambda m: None)
    status = {o.task.key: (o.status, o.attempts) for o in out}
    assert status[tasks[0].key] == ("done", 1)
    assert status[tasks[1].key] == ("done", 2)
    assert status[tasks[2].key] == ("failed", 3)  # 1 + 2 retries, then given up
    assert Counter(log)[tasks[2].key] == 3 and len(out) == 4


def test_slurm_engine_submits_one_job_array(tmp_path, monkeypatch):
    """Without a cluster: fake ``srun``/``sbatch`` on PATH, and read the sbatch file submitit writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", 'echo "Submitted batch job 4242"')):
        f = bin_dir / name
        f.write_text(f"#!/bin/sh\n{body}\n")
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    engine = W.make_engine("slurm", tmp_path / "logs", workers=2, partition="gpu", timeout_min=90, gpus_per_worker=1,
                           cpus_per_worker=6)
    tasks = W.expand("ci", only=["04_cross_dataset"])[:3]
    jobs = W.submit_all(engine, W.TaskRunner(engine.threads), tasks)
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    files = list((tmp_path / "logs").rglob("*_submission.sh"))
    assert len(files) == 1  # one sbatch call for the whole array
    text = files[0].read_text()
    for line in ("--array=0-2%2", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=6", "--time=90"):
        assert f"#SBATCH {line}" in text


def test_local_engine_gives_each_worker_its_own_gpu(tmp_path):
    engine = W.make_engine("local", tmp_path, gpus=[0, 1, 2, 3], gpus_per_worker=2)
    assert engine.workers == [[0, 1], [2, 3]]
    assert [ex.parameters["visible_gpus"] for ex in engine.executors] == [(0, 1), (2, 3)]
    cpu = W.make_engine("local", tmp_path, gpus=[], workers=3)
    assert cpu.workers == [[], [], []] and all(ex.parameters["gpus_per_node"] == 0 for ex in cpu.executors)
    with pytest.raises(ValueError, match="4 GPUs; 2 are visible"):
        W.make_engine("local", tmp_path, gpus=[0, 1], workers=4, gpus_per_worker=1)


# -- the pool engine: persistent workers -----------------------------------------------------------------
def _pool_runner(task):
    """What a pool worker runs in these tests: the task is (key, marker file); the first attempt of a task
    whose marker does not exist yet kills its own worker."""
    key, marker = task.key, Path(task.name)
    if key == "victim" and not marker.exists():
        marker.write_text("killed once")
        os.kill(os.getpid(), signal.SIGKILL)
    import torch

    return {"key": key, "pid": os.getpid(), "threads": torch.get_num_threads(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}


class _PoolTask:
    def __init__(self, key, name):
        self.key, self.name = key, name


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_pool_workers_persist_and_survive_a_killed_worker(tmp_path):
    engine = W.make_engine("pool", tmp_path, gpus=[], workers=2, cpus_per_worker=1)
    assert engine.name == "pool" and engine.threads == 1 and "2 local CPU workers, 1 thread each" in engine.describe
    tasks = [_PoolTask(k, str(tmp_path / f"{k}.marker")) for k in ("a", "victim", "b", "c", "d", "e")]
    messages = []
    try:
        out = W.dispatch(tasks, engine, runner=_pool_runner, retries=1, poll_s=0.05, log=messages.append)
    finally:
        for ex in engine.executors:
            ex.close()
    status = {o.task.key: (o.status, o.attempts) for o in out}
    assert status == {"a": ("done", 1), "victim": ("done", 2), "b": ("done", 1), "c": ("done", 1),
                      "d": ("done", 1), "e": ("done", 1)}, messages
    assert any(m.startswith("FAILED") and "victim" in m and "ended without a result" in m for m in messages), messages
    results = [o.result for o in out]
    assert all(r["threads"] == 1 and r["cuda"] == "" for r in results)  # one thread, no GPU in a CPU worker
    # six tasks, two slots and one restart: at most three processes did all the work (not one per task)
    assert len({r["pid"] for r in results}) <= 3


# -- the store across processes ----------------------------------------------------------------------------
def _writer(folder, worker, n):
    store = ResultStore(folder)
    for i in range(n):  # every writer adds the shared rows and its own
        store.add(pd.DataFrame({"run_key": ["shared", f"w{worker}"], "eval_key": [f"e{i}", f"e{i}"],
                                "attack": ["clean", "clean"], "accuracy": [float(i), float(worker)]}))


def test_store_holds_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    procs = [ctx.Process(target=_writer, args=(tmp_path, w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    rows = ResultStore(tmp_path).read()
    assert len(rows) == 15 + 4 * 15  # nothing lost, nothing duplicated
    assert not rows.duplicated(["run_key", "eval_key", "attack"]).any()


# -- the real thing: a mini sweep through submitit's local executor ---------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


@pytest.mark.skipif(not MINI.exists(), reason="the mini CLIP checkpoint is not built yet")
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker process through /proc")
def test_mini_sweep_survives_a_killed_worker(tmp_path):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({"description": "4 tiny runs", "base": "mini", "parameters": {
        "out_dir": str(tmp_path / "store"), "targets": ["mini_shape"], "shifts": [],
        "methods": ["fap", "capt"], "shots": [1], "seeds": [1, 2], "epochs": 1,
        "max_n": 20, "aa_n": 20, "pgd_steps": 2, "train_steps": 1, "strong_attack": "apgd"}, "notebooks": {}}))
    only = ["04_cross_dataset"]
    tasks = W.expand(profile, only)
    assert len(tasks) == 4
    victim = next(t for t in tasks if t.run.method == "capt")  # the longest training of the four
    killed = []

    def kill_when_training(job, task, attempt):
        if task.key != victim.key or attempt != 1:
            return

        def killer():  # SIGKILL the worker (the controller's child) once it has started this run
            run_dir = Path(task.out_dir) / "runs" / task.key
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not run_dir.exists():
                time.sleep(0.02)
            time.sleep(0.1)  # inside train(): the folder is made just before training starts
            for pid in _children(int(job.job_id)):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        threading.Thread(target=killer, daemon=True).start()

    messages = []
    report = W.sweep(profile, only, engine="local", workers=2, cpus_per_worker=1, retries=2, poll_s=0.2,
                     log=messages.append, on_submit=kill_when_training)
    assert killed, "the worker was not killed mid-run"
    assert not report.failed, "\n".join(messages)
    attempts = {o.task.key: o.attempts for o in report.outcomes}
    assert attempts[victim.key] == 2 and sum(attempts.values()) == 5, messages
    assert any(m.startswith(f"FAILED {victim.name}") for m in messages)

    store = ResultStore(tmp_path / "store")
    rows = store.read()
    # per run and dataset: clean on the whole test set, then clean, apgd and PGD on the 20-image subset
    assert len(rows) == 4 * 2 * 4 and not rows.duplicated(["run_key", "eval_key", "attack"]).any()

    # the same jobs, one after the other in this process, give the same numbers
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = W.Experiment(tmp_path / "sequential", progress=False).run_jobs([j for t in tasks for j in t.jobs()])
    finally:
        torch.set_num_threads(threads)
    order = ["run_key", "eval_key", "attack"]
    pd.testing.assert_frame_equal(rows[ID_COLUMNS].sort_values(order).reset_index(drop=True),
                                  seq[ID_COLUMNS].sort_values(order).reset_index(drop=True))

    # a second sweep finds everything done and submits nothing
    again = W.sweep(profile, only, engine="local", workers=2, log=lambda m: None)
    assert again.skipped == 4 and again.outcomes == []

    # the notebook renders from the store: no training, no evaluation, no new row
    from capt.runner import run_profile

    before = (store.path.stat().st_mtime_ns, sorted(p.name for p in (tmp_path / "store" / "runs").iterdir()))
    run_profile(profile, tmp_path / "notebooks", only=only, log=lambda m: None)
    after = (store.path.stat().st_mtime_ns, sorted(p.name for p in (tmp_path / "store" / "runs").iterdir()))
    assert after == before
    assert (tmp_path / "store" / "tables" / "cross_dataset.csv").exists()


def test_book_fills_the_store_through_a_pool_sweep_first(monkeypatch):
    import capt.cli as cli

    calls = []
    monkeypatch.setattr(W, "sweep", lambda profile, **kw: calls.append((profile, kw)) or W.SweepReport(0, 0, [], 0.0, ""))
    cli._prefill("mini", {"seeds": [1]}, 2)
    assert calls == [("mini", dict(overrides={"seeds": [1]}, engine="pool", workers=2, cpus_per_worker=1))]
    cli._prefill("mini", {}, 0)  # --workers 0: the notebooks compute in turn
    cli._prefill("mini", {}, 1)
    assert len(calls) == 1
