"""Which tasks are done: every row they produce is in their results store (read once, touching no model)."""

from __future__ import annotations

from typing import Sequence

from ..experiments import Experiment
from ..results import ResultStore
from .tasks import Task

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
