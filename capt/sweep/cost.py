"""How much work a task is, in forward passes of one image and of one class prompt: the basis of the
sweep's GPU-hour estimate (book/sweeps.md)."""

from __future__ import annotations

from typing import Callable, Sequence

from .tasks import Task

#: A forward+backward pass (gradient to the input, frozen weights) in units of one forward pass: torch's
#: FLOP counter gives 17.45 / 5.89 GFLOP = 2.96 for open_clip's ViT-B-32 at 224 px (see book/sweeps.md).
FWD_BWD = 3.0


def attack_passes(attack, robust: float = 1.0) -> float:
    """Forward-pass equivalents per image of one evaluation attack, from the table of attack kinds
    (:func:`capt.attacks.attack_cost`) plus the final forward pass. ``robust``: the fraction of images
    expected to survive (the active set of ``aa`` and the later stages of ``autoattack`` follow it);
    1.0 gives an upper bound."""
    from ..attacks import attack_cost
    from ..evaluate import as_attack_spec

    return attack_cost(as_attack_spec(attack), robust) * FWD_BWD + 1.0


def dataset_size(ref) -> dict:
    """{"train", "test", "classes"} of a dataset (or its base/new half): CoOp's counts for the real
    datasets (no files needed), the generated sizes for the mini world."""
    import math

    from ..data import get_spec, load_dataset
    from ..experiments import as_ref

    ref = as_ref(ref)
    spec = get_spec(ref.name)
    if spec.kind == "real":
        from ..data.real import REAL_DATASETS

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

    from ..methods import get_method
    from ..prompts import prompt_variant

    run = task.run
    out = {"train_image": 0.0, "train_text": 0.0, "eval_image": 0.0, "eval_text": 0.0}
    if run.trains:
        m = get_method(run.method, **dict(run.objective_changes))
        src = sizes(run.source)
        n = src["train"] if run.shots == "all" else min(src["train"], run.shots * src["classes"])
        cfg = run.train
        step = (cfg.steps * FWD_BWD if m.adversarial else 0.0) + \
            (2 if m.objective.needs_clean else 1) * (FWD_BWD if prompt_variant(m.prompt).learns_vision else 1.0)
        out["train_image"] = cfg.epochs * n * step + (n if m.objective.needs_frozen else 0)
        steps = cfg.epochs * math.ceil(n / cfg.batch_size)
        out["train_text"] = steps * src["classes"] * (FWD_BWD if prompt_variant(m.prompt).learns_text else 1.0)
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

    from ..experiments import as_ref

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
