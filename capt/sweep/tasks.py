"""What a sweep runs: a whole profile expanded into tasks, one per (results folder, training run).

Every evaluation any chapter asks of one run is merged into its task, so the run trains once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from ..experiments import RunSpec
from ..notebook import Settings
from ..plans import PLANS, Job
from ..paths import resolve
from ..profiles import load_profile, notebook_names, select_notebooks


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
        S = Settings.from_profile(data, nb, **(overrides or {}))
        out_dir = str(S.output)
        data_root = None if S.data_root is None else str(resolve(S.data_root))
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
