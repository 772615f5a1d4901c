"""What the book's notebooks call: validated parameters, runs, tables and plain-language summaries.

A notebook's ``parameters`` cell holds plain values (papermill overrides them); its next cell turns
them into :class:`Settings`, which checks every value at once and fails with a message naming the
valid choices. Defaults are the mini-world profile; ``profiles/paper.yaml`` holds the paper's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from .attacks import AttackSpec
from .data.fewshot import validate_shots
from .experiments import Experiment, RunSpec, as_ref, grid
from .methods import METHODS, get_method
from .train import TrainConfig
from .validation import check_choice, check_eps, check_number

MINI_TARGETS = ("mini_shape", "mini_colour", "mini_size", "mini_fill", "mini_background", "mini_position",
                "mini_heldout", "mini_size_shape", "mini_fill_shape", "mini_grey_shape")
MINI_SHIFTS = ("mini_source_v2", "mini_source_sketch", "mini_source_a", "mini_source_r")
ALL_METHODS = tuple(METHODS)
ABLATION_GROUPS = ("alpha strategy", "lambda", "CE on", "prompt depth", "context length", "frozen teacher")


@dataclass
class Settings:
    """Every parameter an experiment notebook takes, with mini-world defaults, validated on creation."""

    model: str = "mini"
    pretrained: str | None = None
    data_root: str | None = None
    out_dir: str = "../outputs/mini"
    device: str | None = None
    source: str = "mini_source"
    targets: Sequence[str] = MINI_TARGETS
    shifts: Sequence[str] = MINI_SHIFTS
    methods: Sequence[str] = ALL_METHODS
    shots: Sequence = (16,)
    seeds: Sequence[int] = (1, 2, 3)
    n_ctx: int = 2
    depth: int = 3
    ctx_init: str | None = "a photo of a"
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.05
    train_eps: float = 4 / 255
    train_alpha: float = 4 / 255
    train_steps: int = 2
    eval_eps: float = 4 / 255
    pgd_steps: int = 10
    max_n: int | None = 100
    datasets: Sequence[str] = ("mini_source", "mini_shape")  # in-distribution and base-to-new tasks
    eps_list: Sequence[float] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)  # attack-strength sweeps
    steps_list: Sequence[int] = (1, 3, 10, 30)
    aa_n: int = 64  # AutoAttack's fixed subset
    ablations: Sequence[str] = ("alpha strategy", "lambda", "CE on", "prompt depth", "context length",
                                "frozen teacher")
    progress: bool = False

    def __post_init__(self):
        as_ref(self.source)
        for name in ("targets", "shifts", "methods", "seeds", "shots", "datasets", "eps_list", "steps_list",
                     "ablations"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)) or value is None:
                raise ValueError(f"{name} must be a list, e.g. {name}={list(getattr(Settings, name))!r}, got "
                                 f"{value!r}; with papermill pass lists as YAML: -y '{name}: [...]'")
        for v in [*self.targets, *self.shifts]:
            as_ref(v)
        if not self.methods:
            raise ValueError(f"methods must be a non-empty list; valid choices: {', '.join(METHODS)}")
        for m in self.methods:
            get_method(m)
        if not self.seeds:
            raise ValueError("seeds must be a non-empty list of integers, e.g. [1, 2, 3]")
        for s in self.seeds:
            check_number("seed", s, low=0, integer=True)
        self.shots = [validate_shots(k) for k in self.shots]
        for d in self.datasets:
            as_ref(d)
        for e in self.eps_list:
            check_eps(e)
        for k in self.steps_list:
            check_number("steps in steps_list", k, low=1, integer=True)
        check_number("aa_n", self.aa_n, low=1, integer=True)
        for a in self.ablations:
            check_choice("ablation group", a, ABLATION_GROUPS)
        check_eps(self.eval_eps)
        check_eps(self.train_eps)
        check_number("pgd_steps", self.pgd_steps, low=1, integer=True)
        if self.max_n is not None:
            check_number("max_n", self.max_n, low=1, integer=True)
        self.train_config()  # validates epochs, lr, batch size, attack steps
        RunSpec(method=self.methods[0], source=self.source, n_ctx=self.n_ctx, depth=self.depth)
        self.check_model()

    def check_model(self) -> None:
        """Load the model now (cached for the runs) so a bad name, missing weights or a prompt depth
        larger than the encoder fail in the notebook's first cell."""
        from .experiments import _clip
        from .prompts import PromptedCLIP

        exp = self.experiment()
        PromptedCLIP(_clip(self.model, self.pretrained, exp.device), ["X"], prompt="maple", n_ctx=self.n_ctx,
                     depth=self.depth, ctx_init=self.ctx_init)

    @classmethod
    def from_namespace(cls, namespace: dict, **changes) -> "Settings":
        """Settings from a notebook's globals (its parameters cell), plus ``changes``."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in namespace.items() if k in known}, **changes)

    # -- what notebooks use ---------------------------------------------------------------------
    def train_config(self, seed: int = 1) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, eps=self.train_eps,
                           alpha=self.train_alpha, steps=self.train_steps, seed=seed)

    def experiment(self) -> Experiment:
        return Experiment(self.out_dir, data_root=self.data_root, device=self.device, progress=self.progress)

    def runs(self, methods=None, shots=None, seeds=None, source=None, **spec_changes) -> list[RunSpec]:
        common = dict(model=self.model, pretrained=self.pretrained, n_ctx=self.n_ctx, depth=self.depth,
                      ctx_init=self.ctx_init, train=self.train_config())
        common.update(spec_changes)
        runs = grid(list(methods or self.methods), list(shots or self.shots), list(seeds or self.seeds),
                    source or self.source, **common)
        # Each run's training seed is its own seed (data order, attack starts).
        return [replace(r, train=replace(r.train, seed=r.seed)) for r in runs]

    def pgd(self, eps: float | None = None, steps: int | None = None) -> AttackSpec:
        return AttackSpec("pgd", eps=self.eval_eps if eps is None else eps, steps=steps or self.pgd_steps)

    def attacks(self) -> list:
        return ["clean", self.pgd()]

    def ablation_runs(self, seeds=None) -> list[tuple[str, str, RunSpec]]:
        """CAPT's ablations as (group, variant label, run): alpha strategy, lambda, CE input,
        prompt depth and length, and the frozen-teacher term on or off."""
        base = dict(methods=["capt"], shots=[max(k for k in self.shots if k != "all")] if any(
            k != "all" for k in self.shots) else ["all"], seeds=seeds)
        out = []

        def add(group, label, objective=(), **spec):
            if group not in self.ablations:
                return
            for r in self.runs(**base, objective=tuple(sorted(dict(objective).items())), **spec):
                out.append((group, label, r))

        for a in ("frozen_confidence", "fixed", "agreement", "loss_ratio"):
            add("alpha strategy", a, {"alpha": a})
        for lam in (0.0, 0.5, 1.5, 3.0):
            add("lambda", f"{lam:g}", {"lam": lam})
        for ce in ("clean", "adv", "both"):
            add("CE on", ce, {"ce_on": ce})
        for d in sorted({1, max(1, self.depth - 1), self.depth}):
            add("prompt depth", str(d), depth=d)
        for n in sorted({1, self.n_ctx, 2 * self.n_ctx}):
            add("context length", str(n), n_ctx=n)
        add("frozen teacher", "with (adaptive alpha)", {})
        add("frozen teacher", "without (alpha = 0)", {"alpha": "fixed", "alpha_value": 0.0})
        return out


# -- tables -----------------------------------------------------------------------------------------
def mean_std(rows: pd.DataFrame, index: Sequence[str], columns: Sequence[str], value: str = "accuracy",
             decimals: int = 1) -> pd.DataFrame:
    """A pivot table of ``mean ± std`` over seeds (std over the seeds present; 0 for one seed)."""
    from .evaluate import summarize

    index, columns = list(index), list(columns)
    stats = summarize(rows, by=index + columns, value=value, decimals=decimals)
    table = stats.pivot_table(index=index, columns=columns, values="mean ± std", aggfunc="first")
    return _order_methods(table)


def _order_methods(table: pd.DataFrame) -> pd.DataFrame:
    from .plots import _order

    for axis, labels in ((0, table.index), (1, table.columns)):
        names = labels.names if isinstance(labels, pd.MultiIndex) else [labels.name]
        if "method" in names:
            level = names.index("method")
            values = labels.get_level_values(level) if isinstance(labels, pd.MultiIndex) else labels
            order = {m: i for i, m in enumerate(_order(values))}
            table = table.sort_index(axis=axis, level=level, key=lambda s: s.map(order), sort_remaining=False) \
                if isinstance(labels, pd.MultiIndex) else table.reindex(
                    sorted(labels, key=lambda m: order[m]), axis=axis)
    return table


def method_summary(rows: pd.DataFrame, group: str | None = None) -> pd.DataFrame:
    """Per method (and ``group``): mean clean and robust accuracy over datasets and seeds."""
    r = rows.assign(kind=rows["attack"].where(rows["attack"] == "clean", "robust"))
    keys = ["method"] + ([group] if group else [])
    out = r.groupby(keys + ["kind"])["accuracy"].mean().unstack("kind").reset_index()
    out = out.rename(columns={"clean": "clean", "robust": "robust"})
    from .plots import _order

    order = {m: i for i, m in enumerate(_order(out["method"]))}
    return out.sort_values(keys, key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)


def verdict(rows: pd.DataFrame, method: str = "capt", tie: float = 1.0) -> str:
    """One plain sentence per metric: where ``method`` wins, ties (within ``tie`` points) or loses."""
    s = method_summary(rows).set_index("method")
    if method not in s.index:
        return f"{method} was not run."
    parts = []
    for kind in ("clean", "robust"):
        if kind not in s.columns:
            continue
        others = s.drop(index=[method, "zeroshot"], errors="ignore")[kind].dropna()
        if others.empty:
            continue
        best, best_name, ours = others.max(), others.idxmax(), s.loc[method, kind]
        diff = ours - best
        word = "ties with" if abs(diff) <= tie else ("beats" if diff > 0 else "trails")
        parts.append(f"{kind}: {method} {ours:.1f}% {word} the best baseline {best_name} ({best:.1f}%, {diff:+.1f})")
    if "zeroshot" in s.index:
        z = s.loc["zeroshot"]
        parts.append(f"zero-shot CLIP: {z.get('clean', float('nan')):.1f}% clean, {z.get('robust', float('nan')):.1f}% robust")
    return "; ".join(parts) + "."


def save_rows(rows: pd.DataFrame, path: str | Path) -> Path:
    """Write a notebook's rows to CSV atomically (so a user re-running it gets a clean file)."""
    from .io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        rows.to_csv(tmp, index=False)
    return path


def harmonic_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Base, new and their harmonic mean per task, method and attack (means over seeds first)."""
    r = rows.assign(kind=rows["attack"].where(rows["attack"] == "clean", "robust"))
    m = r.groupby(["task", "method", "kind", "split"])["accuracy"].mean().unstack("split")
    m["HM"] = 2 * m["base"] * m["new"] / (m["base"] + m["new"]).where(lambda s: s > 0)
    return m.unstack("kind").swaplevel(0, 1, axis=1).sort_index(axis=1)


def ablation_table(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """Per ablation variant: clean and robust accuracy on the source and averaged over the targets."""
    r = rows.assign(kind=rows["attack"].where(rows["attack"] == "clean", "robust"),
                    where=rows["dataset"].where(rows["dataset"] == source, "targets (mean)"))
    t = r.groupby(["group", "variant", "where", "kind"], sort=False)["accuracy"].mean().unstack(["where", "kind"])
    return t.round(1)


def masking_checks(strong: pd.DataFrame, sweep: pd.DataFrame, noise_margin: float = 0.0) -> str:
    """Plain-language gradient-masking checks: AutoAttack <= PGD, noise hurts less than PGD,
    robust accuracy falls with eps. Returns one line per method."""
    lines = []
    for method, g in strong.groupby("method", sort=False):
        acc = g.groupby("attack")["accuracy"].mean()
        pgd = acc.filter(like="pgd-").filter(regex="^pgd").min()
        aa, noise = acc.get("autoattack"), acc.get("noise")
        s = sweep[(sweep["method"] == method) & (sweep["attack"] != "clean")].groupby("eps")["accuracy"].mean()
        monotone = bool((s.diff().dropna() <= 1e-9).all())
        checks = [f"AutoAttack {aa:.1f}% {'<=' if aa <= pgd + 1e-9 else '>'} PGD {pgd:.1f}%" if aa is not None else "",
                  f"noise {noise:.1f}% vs PGD {pgd:.1f}%" if noise is not None else "",
                  f"robust accuracy {'falls' if monotone else 'does NOT fall'} monotonically with eps"]
        lines.append(f"{method}: " + "; ".join(c for c in checks if c))
    return "\n".join(lines)


def competence_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Zero-shot clean and robust accuracy per dataset beside its chance level (1 / number of classes)."""
    from .data import get_spec, load_dataset

    out = []
    for name, g in rows.groupby("dataset", sort=False):
        ref = as_ref(name)
        n_classes = len(load_dataset(ref.name, get_spec(ref.name).splits[-1]).classnames)
        entry = {"dataset": name, "role": g["role"].iloc[0], "classes": n_classes, "chance": 100.0 / n_classes,
                 "clean": g.loc[g["attack"] == "clean", "accuracy"].mean()}
        for _, r in g[g["attack"] != "clean"].iterrows():
            entry[f"PGD {r['eps'] * 255:.0f}/255"] = r["accuracy"]
        out.append(entry)
    return pd.DataFrame(out).set_index("dataset").round(1)

