"""Runs that survive faults: a process killed with SIGKILL, a sweep killed half-way, a crash while writing.

Killing is real here: the training runs in a child process (``sys.executable -c``) that the test ends with
``os.kill(pid, SIGKILL)`` once its checkpoint reaches a randomly drawn step, then the same command is
started again with ``resume``. The child uses the tiny random CLIP of ``conftest.py`` and a 2-shot
``mini_shape`` split, so a whole run takes a few seconds on two cores; a short sleep inside its attack
(``CAPT_TEST_DELAY``) keeps each step long enough to be caught mid-run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import capt
import capt.experiments as E
from capt.data import load_dataset
from capt.data.fewshot import sample_few_shot
from capt.data.miniworld import TASKS
from capt.io import atomic_torch_save, atomic_write_json, atomic_write_text, safe_torch_load
from capt.plans import Job
from capt.results import ResultStore
from capt.train import TrainConfig, load_prompts, seed_everything, train
from conftest import MINI_RUN

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SIGKILL = getattr(signal, "SIGKILL", None)
pytestmark = pytest.mark.skipif(SIGKILL is None, reason="needs POSIX signals")  # never skipped on Linux CI

# The child processes: a training run, a sweep, and an endless writer. argv: out_dir, then options.
_PRELUDE = f"""
import os, sys, time
sys.path.insert(0, {str(TESTS)!r})
import torch
torch.set_num_threads(int(os.environ.get("CAPT_TEST_THREADS", "1")))
from conftest import make_tiny_clip
delay = float(os.environ.get("CAPT_TEST_DELAY", "0"))
if delay:
    import capt.methods as M
    _attack = M.Method.attack  # every method's train-time attack goes through here
    def _slow_attack(self, *a, **k):
        time.sleep(delay)
        return _attack(self, *a, **k)
    M.Method.attack = _slow_attack
"""

TRAIN_CHILD = _PRELUDE + """
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[3])))
from test_faults import train_run
print("finished", train_run(sys.argv[1], sys.argv[2] == "1", make_tiny_clip()), flush=True)
"""

SWEEP_CHILD = _PRELUDE + """
import capt.experiments as E
from capt.plans import Job
from pathlib import Path
tiny = make_tiny_clip()
E._clip = lambda model, pretrained, device: tiny
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[2])))
from test_faults import _ckpt_step, sweep_jobs
_train = E.train
def _reporting_train(model, data, method, config, out_dir, resume, progress, seed):
    # what gets trained, and from which step
    print("started", Path(out_dir).name, _ckpt_step(Path(out_dir) / "checkpoint.pt"), flush=True)
    return _train(model, data, method, config, out_dir=out_dir, resume=resume, progress=progress, seed=seed)
E.train = _reporting_train
exp = E.Experiment(sys.argv[1], progress=False, batch_size=64, device="cpu")
rows = exp.run_jobs(sweep_jobs())
print("finished", len(rows), flush=True)
"""

WRITER_CHILD = """
import sys
import torch
from capt.io import atomic_torch_save
path = sys.argv[1]
v = 0
while True:
    v += 1
    atomic_torch_save({"v": v, "data": torch.full((1_500_000,), float(v))}, path)
"""

def _steps(n_images: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps of a run (the last batch of an epoch may be short, never dropped)."""
    return epochs * -(-n_images // batch_size)


_SHAPES = len(TASKS["mini_shape"].classnames)  # from the task table: the child processes import this module
TOTAL_STEPS = _steps(2 * _SHAPES, 4, 3)  # 2 shots per class, batch 4, 3 epochs (train_run)


def train_run(out, resume: bool, clip) -> int:
    """The run that gets killed: CAPT on 2 shots of mini_shape, a checkpoint after every step."""
    data = sample_few_shot(load_dataset("mini_shape", "train"), 2, seed=1)
    seed_everything(0)
    model = capt.PromptedCLIP(clip, data.classnames, prompt="maple", n_ctx=2, depth=2)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.05, eps=4 / 255, alpha=2 / 255, steps=2, checkpoint_every=1)
    r = train(model, data, "capt", cfg, out_dir=out, resume=resume, progress=False, seed=3)
    torch.save(model.prompt_state_dict(), os.path.join(out, "final_prompts.pt"))
    return r.steps


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread here and in the children: runs compared bit for bit use the same thread count, and
    two threads per process on two busy cores slow small models down many times."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _child(script: str, *args, delay: float = 0.0, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "CAPT_TEST_DELAY": str(delay), "CAPT_TEST_THREADS": str(torch.get_num_threads()),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        proc.out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err[-3000:]}"
    return proc


def _ckpt_step(path: Path) -> int:
    """The step of a checkpoint being rewritten by another process (a rename swaps it whole)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except FileNotFoundError:
        return -1


def _kill_at(proc: subprocess.Popen, ckpt: Path, step: int, timeout: float = 180) -> int:
    """SIGKILL ``proc`` as soon as ``ckpt`` reaches ``step``; returns the step it was killed at."""
    start, seen, now = time.monotonic(), None, -1
    while proc.poll() is None and time.monotonic() - start < timeout:
        try:
            st = ckpt.stat()
            stamp = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp is not None and stamp != seen:  # read it only when a new one was renamed into place
            seen, now = stamp, _ckpt_step(ckpt)
        if now >= step:
            os.kill(proc.pid, SIGKILL)
            proc.communicate(timeout=60)
            assert proc.returncode == -SIGKILL
            return now
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    raise AssertionError(f"the child ended (rc={proc.returncode}) before step {step}:\n{err[-2000:]}")


def _history(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "history.csv").drop(columns=["seconds"])  # wall-clock time may differ


# -- 1. a training run killed with SIGKILL, twice, then resumed -------------------------------------------
def test_sigkill_at_random_steps_then_resume_equals_an_uninterrupted_run(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    full, part = tmp_path / "full", tmp_path / "part"
    # The reference runs uninterrupted in a child process like the others: float results are only bit-for-bit
    # reproducible between processes set up alike (this one has built and run other models first).
    assert f"finished {TOTAL_STEPS}" in _child(TRAIN_CHILD, full, 0, __file__).out

    killed_at = []
    for high in (TOTAL_STEPS // 2, TOTAL_STEPS - 2):   # kill once in each half of the run
        low = max(killed_at, default=0) + 1
        if low > high:
            break
        proc = _child(TRAIN_CHILD, part, 1, __file__, delay=0.12, wait=False)
        killed_at.append(_kill_at(proc, part / "checkpoint.pt", rng.randint(low, high)))
    note = f"(random seed {seed}, killed at steps {killed_at})"
    assert killed_at[0] < TOTAL_STEPS and not (part / "final_prompts.pt").exists(), note
    assert not (part / "history.csv").exists(), note   # written only when a run finishes

    assert f"finished {TOTAL_STEPS}" in _child(TRAIN_CHILD, part, 1, __file__).out
    a = torch.load(full / "final_prompts.pt", weights_only=True)
    b = torch.load(part / "final_prompts.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"prompt {k} differs after the kills {note}"
    pd.testing.assert_frame_equal(_history(full), _history(part), check_exact=True, obj=f"history {note}")
    assert len(_history(part)) == TOTAL_STEPS
    # Whatever a kill left behind (a half-written temporary file) is never what a later run reads.
    leftovers = _folder_names(part)
    assert {"checkpoint.pt", "history.csv", "final_prompts.pt"} <= set(leftovers)
    assert all(n in ("checkpoint.pt", "history.csv", "final_prompts.pt") or n.endswith(".tmp") for n in leftovers)


# -- 2. a sweep killed half-way ------------------------------------------------------------------------------
def sweep_jobs() -> list[Job]:
    """Three training runs (seeds 1-3), each evaluated clean and under PGD on mini_shape."""
    tc = TrainConfig(epochs=2, batch_size=4, lr=0.05, eps=4 / 255, alpha=2 / 255, steps=1,
                     checkpoint_every=1)
    runs = E.grid(["capt"], [1], [1, 2, 3], "mini_shape", train=tc, **{**MINI_RUN, "depth": 2})  # 1 shot per class, batch 4
    attacks = ("clean", {"name": "pgd", "eps": 4 / 255, "steps": 2})
    return [Job(r, ("mini_shape",), attacks, 40) for r in runs]


def _started(out: str) -> list[tuple[str, int]]:
    """The (run key, starting step) pairs a sweep child reports, in order."""
    return [(w[1], int(w[2])) for w in (line.split() for line in out.splitlines()) if w and w[0] == "started"]


def test_sweep_killed_midway_skips_finished_runs_and_resumes_the_unfinished_one(tmp_path):
    jobs = sweep_jobs()
    keys = [j.run.key for j in jobs]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    # Every sweep runs in a child process set up alike, so their floats can be compared bit for bit.
    assert _started(_child(SWEEP_CHILD, reference, __file__).out) == [(k, -1) for k in keys]

    proc = _child(SWEEP_CHILD, killed, __file__, delay=0.15, wait=False)
    step = _kill_at(proc, killed / "runs" / keys[1] / "checkpoint.pt", 2)
    assert 2 <= step < _steps(_SHAPES, 4, 2)
    store = ResultStore(killed)
    assert set(store.read()["run_key"]) == {keys[0]}   # the first run is finished and stored, no other

    # Restart and watch what gets trained, and from which step.
    restart = _child(SWEEP_CHILD, killed, __file__).out
    assert _started(restart) == [(keys[1], step), (keys[2], -1)]   # run 1 skipped, run 2 resumed, run 3 fresh
    assert "finished 6" in restart and len(ResultStore(killed).read()) == 6

    # The same numbers as the sweep that was never interrupted.
    def table(folder):
        return (ResultStore(folder).read().set_index(["run_key", "eval_key", "attack"])
                [["n", "correct", "accuracy"]].sort_index())

    pd.testing.assert_frame_equal(table(killed), table(reference))
    for k in keys:
        a = safe_torch_load(reference / "runs" / k / "checkpoint.pt")
        b = safe_torch_load(killed / "runs" / k / "checkpoint.pt")
        assert all(torch.equal(a["prompts"][n], b["prompts"][n]) for n in a["prompts"])
        assert [h["total"] for h in a["history"]] == [h["total"] for h in b["history"]]

    # A third start computes nothing at all.
    third = _child(SWEEP_CHILD, killed, __file__).out
    assert _started(third) == [] and "finished 6" in third


# -- 3. crashes while writing --------------------------------------------------------------------------------
def test_sigkill_during_checkpoint_writes_never_leaves_a_torn_file(tmp_path):
    """A writer saving an 6 MB checkpoint in a loop is killed at random moments: the file always loads
    whole and self-consistent; only temporary files (never read) may be left behind."""
    path = tmp_path / "checkpoint.pt"
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    seen = []
    for _ in range(3):
        proc = _child(WRITER_CHILD, path, wait=False)
        start = time.monotonic()
        while not path.exists() and time.monotonic() - start < 60:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(proc.pid, SIGKILL)
        proc.communicate(timeout=60)
        state = safe_torch_load(path)
        assert state["data"].shape == (1_500_000,) and bool((state["data"] == state["v"]).all())
        seen.append(state["v"])
    assert seen == sorted(seen)  # each restart went on from where the file was


REAL_TORCH_SAVE, REAL_TO_CSV, REAL_REPLACE = torch.save, pd.DataFrame.to_csv, os.replace
DISK_FULL = OSError(28, "No space left on device (simulated)")


def torn_torch_save(obj, target, *args, **kwargs):
    """torch.save that puts half of its bytes in place, then fails (disk full, power cut)."""
    import io

    buf = io.BytesIO()
    REAL_TORCH_SAVE(obj, buf, *args, **kwargs)
    Path(target).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    raise DISK_FULL


def torn_to_csv(self, target=None, *args, **kwargs):
    text = REAL_TO_CSV(self, None, *args, **kwargs)
    Path(target).write_text(text[: len(text) // 2])
    raise DISK_FULL


def torn_replace(src, dst, *args, **kwargs):
    """The process dies after writing half of the new file, before it is renamed into place."""
    with open(src, "r+b") as fh:
        fh.truncate(len(fh.read()) // 2)
    raise DISK_FULL


def _folder_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _writers():
    from capt.report import save_rows

    return {
        "atomic_torch_save (checkpoints)": (lambda v, p: atomic_torch_save({"v": torch.full((1000,), float(v))}, p),
                                            (torch, "save", torn_torch_save)),
        "save_rows (notebook tables)": (lambda v, p: save_rows(pd.DataFrame({"v": [v] * 500}), p),
                                        (pd.DataFrame, "to_csv", torn_to_csv)),
        "atomic_write_text (spec.json)": (lambda v, p: atomic_write_text(p, f"version {v}\n" * 500),
                                          (os, "replace", torn_replace)),
        "atomic_write_json (few-shot cache, manifest)": (lambda v, p: atomic_write_json(p, {"v": [v] * 500}),
                                                         (os, "replace", torn_replace)),
        "atomic_torch_save, dying before the rename": (
            lambda v, p: atomic_torch_save({"v": torch.full((1000,), float(v))}, p), (os, "replace", torn_replace)),
    }


@pytest.mark.parametrize("name", ["atomic_torch_save (checkpoints)", "save_rows (notebook tables)",
                                  "atomic_write_text (spec.json)", "atomic_write_json (few-shot cache, manifest)",
                                  "atomic_torch_save, dying before the rename"])
def test_a_crash_halfway_through_a_write_keeps_the_previous_complete_file(name, tmp_path, monkeypatch):
    write, (owner, attr, torn) = _writers()[name]
    path = tmp_path / "file"
    write(1, path)
    before = path.read_bytes()
    monkeypatch.setattr(owner, attr, torn)
    with pytest.raises(OSError, match="simulated"):
        write(2, path)
    monkeypatch.undo()
    assert path.read_bytes() == before, "the previous complete file must stay in place"
    assert _folder_names(tmp_path) == ["file"], "no temporary file may be left behind"
    write(3, path)  # and the next write works
    assert path.read_bytes() != before


def test_results_store_crash_during_add_keeps_the_old_rows(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    first = pd.DataFrame({"run_key": ["r"], "eval_key": ["e1"], "attack": ["clean"], "accuracy": [50.0]})
    store.add(first)
    before = (tmp_path / "results.csv").read_bytes()
    monkeypatch.setattr(pd.DataFrame, "to_csv", torn_to_csv)
    with pytest.raises(OSError, match="simulated"):
        store.add(first.assign(eval_key="e2", accuracy=10.0))
    monkeypatch.undo()
    assert (tmp_path / "results.csv").read_bytes() == before
    assert _folder_names(tmp_path) == ["results.csv"]          # no temporary file, no lock left
    assert store.keys() == {("r", "e1")}
    store.add(first.assign(eval_key="e2", accuracy=10.0))       # the next writer is not blocked
    assert store.keys() == {("r", "e1"), ("r", "e2")}


def test_results_store_lock_of_a_killed_writer_does_not_block_the_next_run(tmp_path):
    """A writer killed while holding the store's lock leaves the lock file; the next run takes it over at
    once (its owner is gone) instead of waiting for it to age."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = ResultStore(tmp_path)
    (tmp_path / "results.csv.lock").write_text(f"{socket.gethostname()}:{dead.pid}\n")
    t0 = time.monotonic()
    store.add(pd.DataFrame({"run_key": ["r"], "eval_key": ["e"], "attack": ["clean"], "accuracy": [1.0]}))
    assert time.monotonic() - t0 < 5
    assert _folder_names(tmp_path) == ["results.csv"]


def test_results_store_lock_of_a_live_writer_is_respected(tmp_path):
    import threading

    from capt.results import _lock

    lock = tmp_path / "results.csv.lock"
    lock.write_text(f"{socket.gethostname()}:{os.getpid()}\n")  # its owner (this process) is alive
    got = threading.Event()

    def writer():
        with _lock(tmp_path / "results.csv", timeout=60):
            got.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    assert not got.wait(0.5), "a live writer's lock was taken over"
    lock.unlink()                      # the owner finishes
    assert got.wait(5)
    t.join(5)


def test_sigkill_during_results_writes_leaves_a_readable_store(tmp_path):
    """A child appending rows in a loop is killed at a random moment; the store reads whole, and the next
    writer is not held up by the lock the child may have died holding."""
    script = f"""
import sys, itertools
import pandas as pd
from capt.results import ResultStore
store = ResultStore(sys.argv[1])
for i in itertools.count():
    store.add(pd.DataFrame({{"run_key": ["r"] * 50, "eval_key": [f"e{{i}}-{{j}}" for j in range(50)],
                            "attack": ["clean"] * 50, "accuracy": [float(i)] * 50}}))
"""
    proc = _child(script, tmp_path, wait=False)
    path = tmp_path / "results.csv"
    start = time.monotonic()
    while (not path.exists() or path.stat().st_size < 200_000) and time.monotonic() - start < 60:
        time.sleep(0.01)
    os.kill(proc.pid, SIGKILL)
    proc.communicate(timeout=60)
    store = ResultStore(tmp_path)
    df = store.read()
    assert len(df) % 50 == 0 and len(df) > 0 and df.notna().all().all()
    t0 = time.monotonic()
    store.add(pd.DataFrame({"run_key": ["z"], "eval_key": ["z"], "attack": ["clean"], "accuracy": [0.0]}))
    assert time.monotonic() - t0 < 5 and len(store.read()) == len(df) + 1


# -- 4. checkpoints written atomically during training; truncated files are refused ------------------------------
@pytest.fixture(scope="module")
def shot_data():
    return sample_few_shot(load_dataset("mini_shape", "train"), 1, seed=1)  # one image per class


CFG = dict(epochs=2, batch_size=4, lr=0.05, eps=4 / 255, alpha=2 / 255, steps=1, checkpoint_every=1)


def _model(tiny_clip, data, seed=0):
    seed_everything(seed)
    return capt.PromptedCLIP(tiny_clip, data.classnames, prompt="maple", n_ctx=2, depth=2)


def test_crash_while_saving_a_checkpoint_keeps_the_last_one_and_resume_still_matches(tiny_clip, shot_data,
                                                                                      tmp_path, monkeypatch):
    cfg = TrainConfig(**CFG)
    ref = _model(tiny_clip, shot_data)
    r_ref = train(ref, shot_data, "capt", cfg, out_dir=tmp_path / "ref", progress=False, seed=2)

    out = tmp_path / "run"
    train(_model(tiny_clip, shot_data), shot_data, "capt", cfg, out_dir=out, progress=False, seed=2, stop_after=2)
    good = (out / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(torch, "save", torn_torch_save)
    with pytest.raises(OSError, match="simulated"):
        train(_model(tiny_clip, shot_data, 7), shot_data, "capt", cfg, out_dir=out, resume=True, progress=False, seed=2)
    monkeypatch.undo()
    assert (out / "checkpoint.pt").read_bytes() == good and safe_torch_load(out / "checkpoint.pt")["step"] == 2
    assert _folder_names(out) == ["checkpoint.pt"]

    # A crash writing history.csv at the very end: the final checkpoint is complete, history is not there yet.
    monkeypatch.setattr(pd.DataFrame, "to_csv", torn_to_csv)
    with pytest.raises(OSError, match="simulated"):
        train(_model(tiny_clip, shot_data, 8), shot_data, "capt", cfg, out_dir=out, resume=True, progress=False, seed=2)
    monkeypatch.undo()
    assert _folder_names(out) == ["checkpoint.pt"] and safe_torch_load(out / "checkpoint.pt")["step"] == _steps(len(shot_data), CFG["batch_size"], CFG["epochs"])

    again = _model(tiny_clip, shot_data, 9)
    r = train(again, shot_data, "capt", cfg, out_dir=out, resume=True, progress=False, seed=2)
    assert r.finished and _folder_names(out) == ["checkpoint.pt", "history.csv"]
    assert all(torch.equal(a, b) for a, b in zip(ref.prompt_parameters(), again.prompt_parameters()))
    assert r.history["total"].tolist() == r_ref.history["total"].tolist()


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_checkpoint_is_a_clear_error_not_a_silent_restart(keep, tiny_clip, shot_data, tmp_path):
    out = tmp_path / "run"
    train(_model(tiny_clip, shot_data), shot_data, "capt", TrainConfig(**CFG), out_dir=out, progress=False, seed=2,
          stop_after=3)
    data = (out / "checkpoint.pt").read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    (out / "checkpoint.pt").write_bytes(data[:n])
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint\.pt is corrupt or not a capt checkpoint") as err:
        train(_model(tiny_clip, shot_data), shot_data, "capt", TrainConfig(**CFG), out_dir=out, resume=True,
              progress=False, seed=2)
    assert "delete it and re-run" in str(err.value)
    assert (out / "checkpoint.pt").read_bytes() == data[:n]       # nothing was overwritten
    with pytest.raises(ValueError, match="corrupt"):
        load_prompts(_model(tiny_clip, shot_data), out / "checkpoint.pt")


def test_truncated_results_file_is_refused_not_trusted(tmp_path):
    store = ResultStore(tmp_path)
    store.add(pd.DataFrame({"run_key": ["r1", "r2"], "eval_key": ["e1", "e2"], "attack": ["clean"] * 2,
                            "accuracy": [50.0, 12.5]}))
    text = (tmp_path / "results.csv").read_text()
    (tmp_path / "results.csv").write_text(text[:-4])  # cut inside the last row
    with pytest.raises(ValueError, match="results file .*results.csv is truncated"):
        store.read()
    with pytest.raises(ValueError, match="truncated"):
        store.add(pd.DataFrame({"run_key": ["r3"], "eval_key": ["e3"], "attack": ["clean"], "accuracy": [1.0]}))
    assert (tmp_path / "results.csv").read_text() == text[:-4]


def test_spec_json_of_a_killed_run_does_not_change_its_key(tiny_clip, tmp_path, monkeypatch):
    """What identifies a run is its hash, not a file it wrote: a corrupt spec.json is rewritten, never read."""
    monkeypatch.setattr(E, "_clip", lambda model, pretrained, device: tiny_clip)
    job = sweep_jobs()[0]
    exp = E.Experiment(tmp_path, progress=False, batch_size=64, device="cpu")
    folder = tmp_path / "runs" / job.run.key
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text('{"key": "trunc')
    exp.evaluate(job.run, ["mini_shape"], ["clean"], max_n=10)
    assert json.loads((folder / "spec.json").read_text())["key"] == job.run.key
