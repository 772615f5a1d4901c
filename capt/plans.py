"""What each chapter computes, as data: its training runs and evaluations (planning lives here, not in
:class:`capt.notebook.Settings`, which holds values).

A notebook calls ``exp.run_jobs(plans.NAME(S))``; the sweep runner expands a whole profile through the
same functions, so what a sweep computes is exactly what the notebooks later read from the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .attacks import AttackSpec
from .chapters import CHAPTERS
from .experiments import RunSpec, grid


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


def runs(S, methods=None, shots=None, seeds=None, source=None, objective_changes=(), **spec_changes) -> list[RunSpec]:
    """The training runs of settings ``S``: every (method, shots, seed), each with its one seed; a method's
    objective carries the profile's ``objectives`` for it, then ``objective_changes`` (an ablation's), and
    its trainer the profile's ``training`` values for it."""
    out = []
    for m in dict.fromkeys(methods or S.methods):
        common = {**S.run_values(), "train": S.train_config(m), **spec_changes}
        changes = {**S.objectives.get(m, {}), **dict(objective_changes)}
        out += grid([m], list(shots or S.shots), list(seeds or S.seeds), source or S.source,
                    objective_changes=tuple(sorted(changes.items())), **common)
    return out


def evaluations(S) -> list[tuple[tuple, int | None]]:
    """(attacks, subset size) pairs of a main table: clean and PGD on ``max_n`` images, the strong
    attack (and clean, for a paired robust-vs-clean view) on ``strong_n`` of them. Clean accuracy
    costs one forward pass, so it is also measured on the whole test set whenever ``max_n`` cuts it
    (the tables show the clean row on the most images)."""
    strong_n = S.strong_n
    whole = [(("clean",), None)] if S.max_n is not None else []
    if strong_n == S.max_n:
        return whole + [(("clean", S.strong(), S.pgd()), S.max_n)]
    return whole + [(("clean", S.pgd()), S.max_n), (("clean", S.strong()), strong_n)]


def ablation_runs(S, seeds=None) -> list[tuple[str, str, RunSpec]]:
    """CAPT's ablations as (group, variant label, run): alpha strategy, lambda, CE input,
    prompt depth and length, and the frozen-teacher term on or off."""
    counted = [k for k in S.shots if k != "all"]
    base = dict(methods=["capt"], shots=[max(counted)] if counted else ["all"], seeds=seeds)
    out = []

    def add(group, label, changes=(), **spec):
        if group not in S.ablations:
            return
        for r in runs(S, **base, objective_changes=tuple(sorted(dict(changes).items())), **spec):
            out.append((group, label, r))

    for a in ("frozen_confidence", "fixed", "agreement", "loss_ratio"):
        add("alpha strategy", a, {"alpha_strategy": a})
    for lam in (0.0, 0.5, 1.5, 3.0):
        add("lambda", f"{lam:g}", {"lam": lam})
    for ce in ("clean", "adv", "both"):
        add("CE on", ce, {"ce_on": ce})
    for d in sorted({1, max(1, S.depth - 1), S.depth}):
        add("prompt depth", str(d), depth=d)
    for n in sorted({1, S.n_ctx, 2 * S.n_ctx}):
        add("context length", str(n), n_ctx=n)
    add("frozen teacher", "with (adaptive alpha)", {})
    add("frozen teacher", "without (alpha = 0)", {"alpha_strategy": "fixed", "alpha_value": 0.0})
    return out


def _jobs(specs, datasets, attacks, max_n, **tags) -> list[Job]:
    return [Job(r, tuple(datasets), tuple(attacks), max_n, tuple(sorted(tags.items()))) for r in specs]


def _main(S, specs, datasets, **tags) -> list[Job]:
    """A main table's jobs: clean, the strong (headline) attack and PGD, each on its own subset size."""
    return [j for attacks, n in evaluations(S) for j in _jobs(specs, datasets, attacks, n, **tags)]


def zeroshot_robustness(S) -> list[Job]:
    datasets = [S.source, *S.targets, *S.shifts]
    zeroshot = runs(S, methods=["zeroshot"])
    return (_main(S, zeroshot, datasets)
            + _jobs(zeroshot, datasets, [S.pgd(eps=e) for e in S.eps_list], S.max_n, part="eps"))


def in_distribution(S) -> list[Job]:
    return [j for d in S.datasets for j in _main(S, runs(S, source=d), [d])]


def distribution_shift(S) -> list[Job]:
    return _main(S, runs(S), [S.source, *S.shifts])


def cross_dataset(S) -> list[Job]:
    return _main(S, runs(S), [S.source, *S.targets])


def base_to_new(S) -> list[Job]:
    return [j for d in S.datasets for j in _main(S, runs(S, source=f"{d}[base]"), [f"{d}[base]", f"{d}[new]"])]


def ablations(S) -> list[Job]:
    return [j for group, label, run in ablation_runs(S)
            for j in _main(S, [run], [S.source, *S.targets], group=group, variant=label)]


def attack_strength(S) -> list[Job]:
    """The attack ladder on the source task: eps and steps sweeps of PGD, and every attack kind (the
    references included) on the strong attack's fixed subset."""
    trained = runs(S)
    ladder = ["clean", AttackSpec("noise", eps=S.eval_eps), S.pgd(),
              AttackSpec("cw_pgd", eps=S.eval_eps, steps=S.pgd_steps),
              AttackSpec("apgd", eps=S.eval_eps, steps=S.pgd_steps), AttackSpec("autoattack", eps=S.eval_eps),
              S.strong()]
    return (_jobs(trained, [S.source], ["clean", *[S.pgd(eps=e) for e in S.eps_list]], S.max_n, part="eps")
            + _jobs(trained, [S.source], [S.pgd(steps=k) for k in S.steps_list], S.max_n, part="steps")
            + _jobs(trained, [S.source], list({str(a): a for a in ladder}.values()), S.strong_n, part="strong"))


# chapter name -> its plan, as the chapter table names it (the sweep runner's map from a profile to jobs)
PLANS = {c.name: globals()[c.plan] for c in CHAPTERS.values()}
