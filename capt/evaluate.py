"""One evaluator: clean and robust accuracy under a list of attacks, as tidy pandas rows."""

from __future__ import annotations

import dataclasses
import time
from typing import Iterable, Sequence

import pandas as pd
import torch

from .attacks import AttackSpec, make_attack
from .train import autocast_for

ROW_COLUMNS = ["dataset", "method", "shots", "seed", "attack", "eps", "steps", "n", "correct", "accuracy", "seconds"]


def as_attack_spec(a, eps: float | None = None, steps: int | None = None) -> AttackSpec:
    """Accept an :class:`AttackSpec`, a name (``"pgd"``, using ``eps``/``steps``) or a dict of its fields."""
    if isinstance(a, AttackSpec):
        return a
    if isinstance(a, str):
        kw = {}
        if eps is not None:
            kw["eps"] = eps
        if steps is not None:
            kw["steps"] = steps
        return AttackSpec(a, **kw)
    if isinstance(a, dict):
        valid = [f.name for f in dataclasses.fields(AttackSpec)]
        unknown = sorted(set(a) - set(valid))
        if unknown:
            raise ValueError(f"unknown attack field(s) {', '.join(map(repr, unknown))} in {a!r}; "
                             f"valid choices: {', '.join(valid)}")
        return AttackSpec(**a)
    raise ValueError(f"an attack must be a name, a dict or an AttackSpec, got {a!r}")


def fixed_subset(dataset, n: int | None, seed: int = 0):
    """The same ``n`` items for every method and attack (a seeded choice), or all when ``n`` is None."""
    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return dataset.subset(order.tolist())


def evaluate(model, dataset, attacks: Iterable = ("clean",), *, eps: float | None = None, steps: int | None = None,
             batch_size: int = 128, max_n: int | None = None, seed: int = 0, meta: dict | None = None,
             progress: bool = True, amp: bool = True) -> pd.DataFrame:
    """Accuracy (%) of ``model`` on ``dataset`` under each attack, one row per attack.

    ``meta`` fills the identifying columns (dataset, method, shots, seed). Text features are computed
    once for the whole evaluation; ``max_n`` evaluates a fixed seeded subset (e.g. for AutoAttack).
    """
    specs = [as_attack_spec(a, eps, steps) for a in attacks]
    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} is empty: nothing to evaluate")
    if len(dataset.classnames) != len(model.classnames):
        raise ValueError(f"dataset {dataset.name!r} has {len(dataset.classnames)} classes but the model was built "
                         f"for {len(model.classnames)}; build PromptedCLIP with dataset.classnames")
    data = fixed_subset(dataset, max_n, seed)
    device = model.clip.logit_scale.device
    meta = {"dataset": getattr(dataset, "name", None), "method": None, "shots": None, "seed": None, **(meta or {})}
    model.eval()
    with torch.no_grad(), autocast_for(device, amp):
        text_features = model.encode_text()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    from tqdm import tqdm  # plain text bars: no ipywidgets needed in notebooks

    rows = []
    for spec in specs:
        attack = make_attack(spec, model, num_classes=len(model.classnames), seed=seed, text_features=text_features)
        correct = n = 0
        t0 = time.perf_counter()
        for x, y in tqdm(loader, desc=f"eval {spec.label}", disable=not progress, leave=False):
            x, y = x.to(device), y.to(device)
            with autocast_for(device, amp):
                x_eval = attack(x, y)
                with torch.inference_mode():
                    pred = model.logits_from_features(model.encode_image(x_eval), text_features).argmax(1)
            correct += int((pred == y).sum())
            n += len(y)
        rows.append({**meta, "attack": spec.label, "eps": 0.0 if spec.name == "clean" else spec.eps,
                     "steps": 0 if spec.name in ("clean", "noise") else spec.steps, "n": n, "correct": correct,
                     "accuracy": 100.0 * correct / n, "seconds": time.perf_counter() - t0})
    return pd.DataFrame(rows, columns=list(dict.fromkeys(ROW_COLUMNS + list(meta))))


def accuracy(model, dataset, batch_size: int = 256) -> float:
    """Clean accuracy (%) in one call."""
    return float(evaluate(model, dataset, ["clean"], batch_size=batch_size, progress=False)["accuracy"].iloc[0])


def summarize(rows: pd.DataFrame, by: Sequence[str] = ("dataset", "method", "shots", "attack", "eps"),
              value: str = "accuracy", decimals: int = 1) -> pd.DataFrame:
    """Mean, std and count over seeds of ``value`` per group, plus a ``mean ± std`` text column."""
    by = [b for b in by if b in rows.columns]
    g = rows.groupby(by, dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["mean ± std"] = [f"{m:.{decimals}f} ± {s:.{decimals}f}" for m, s in zip(out["mean"], out["std"])]
    return out
