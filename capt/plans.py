"""Each experiment's plan: the training runs and evaluations it needs, as data.

A notebook calls ``exp.run_jobs(plans.NAME(S))``; the sweep runner expands a whole profile through the
same functions, so what a sweep computes is exactly what the notebooks later read from the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .attacks import AttackSpec
from .chapters import CHAPTERS
from .experiments import RunSpec


@dataclass(frozen=True)
class Job:
    """Evaluate ``run`` (training it first if needed) on ``datasets`` under ``attacks``."""

    run: RunSpec
    datasets: tuple
    attacks: tuple
    max_n: int | None = None
    tags: tuple = ()  # (("part", "sweep"), ...) columns added to the rows

    @property
    def key(self) -> tuple:
        return (self.run.key, self.datasets, tuple(map(str, self.attacks)), self.max_n)


def _jobs(runs, datasets, attacks, max_n, **tags) -> list[Job]:
    return [Job(r, tuple(datasets), tuple(attacks), max_n, tuple(sorted(tags.items()))) for r in runs]


def _main(S, runs, datasets, **tags) -> list[Job]:
    """A main table's jobs: clean, the strong (headline) attack and PGD, each on its own subset size."""
    return [j for attacks, n in S.evaluations() for j in _jobs(runs, datasets, attacks, n, **tags)]


def zeroshot_robustness(S) -> list[Job]:
    datasets = [S.source, *S.targets, *S.shifts]
    runs = S.runs(methods=["zeroshot"])
    return (_main(S, runs, datasets)
            + _jobs(runs, datasets, [S.pgd(eps=e) for e in S.eps_list], S.max_n, part="eps"))


def in_distribution(S) -> list[Job]:
    return [j for d in S.datasets for j in _main(S, S.runs(source=d), [d])]


def distribution_shift(S) -> list[Job]:
    return _main(S, S.runs(), [S.source, *S.shifts])


def cross_dataset(S) -> list[Job]:
    return _main(S, S.runs(), [S.source, *S.targets])


def base_to_new(S) -> list[Job]:
    return [j for d in S.datasets for j in _main(S, S.runs(source=f"{d}[base]"), [f"{d}[base]", f"{d}[new]"])]


def ablations(S) -> list[Job]:
    return [j for group, label, run in S.ablation_runs()
            for j in _main(S, [run], [S.source, *S.targets], group=group, variant=label)]


def attack_strength(S) -> list[Job]:
    """The attack ladder on the source task: eps and steps sweeps of PGD, and every attack kind (the
    references included) on the strong attack's fixed subset."""
    runs = S.runs()
    ladder = ["clean", AttackSpec("noise", eps=S.eval_eps), S.pgd(),
              AttackSpec("cw_pgd", eps=S.eval_eps, steps=S.pgd_steps),
              AttackSpec("apgd", eps=S.eval_eps, steps=S.pgd_steps), AttackSpec("autoattack", eps=S.eval_eps),
              S.strong()]
    return (_jobs(runs, [S.source], ["clean", *[S.pgd(eps=e) for e in S.eps_list]], S.max_n, part="eps")
            + _jobs(runs, [S.source], [S.pgd(steps=k) for k in S.steps_list], S.max_n, part="steps")
            + _jobs(runs, [S.source], list({str(a): a for a in ladder}.values()), S.strong_n, part="strong"))


# chapter name -> its plan, as the chapter table names it (the sweep runner's map from a profile to jobs)
PLANS = {c.name: globals()[c.plan] for c in CHAPTERS.values()}
