"""One evaluator: clean and robust accuracy under a list of attacks, as tidy pandas rows."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .attacks import (FAMILIES, AttackSpec, CaptAutoAttack, attack_cost, batch_seed, make_attack,
                      precision_of)
from .io import atomic_write_text
from .results import MASK_COLUMN, decode_mask, encode_mask
from .validation import eps_fraction

#: The columns of an evaluation row. ``family``: the attack's family (clean / noise / weak / strong);
#: ``passes``: image-tower forward+backward passes per image the attack spent (NaN where torchattacks
#: runs it and nobody counts); ``depth``/``n_ctx``: the prompt's shape; ``correct_mask``: per-image outcomes.
#: ``eps_fraction``: eps as written ("3/255"), beside the float; ``precision``: the dtype the attack ran in;
#: ``classes``: the dataset's class count (chance level).
ROW_COLUMNS = ["dataset", "method", "shots", "seed", "attack", "eps", "eps_fraction", "precision", "steps", "n",
               "classes", "correct", "accuracy", "seconds", "family", "passes", "depth", "n_ctx", MASK_COLUMN]


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
    positions = subset_positions(len(dataset), n, seed)
    return dataset if positions is None else dataset.subset(positions)


def subset_positions(size: int, n: int | None, seed: int = 0) -> list[int] | None:
    """The positions :func:`fixed_subset` keeps of a dataset of ``size`` items (None: all of them)."""
    if n is None or n >= size:
        return None
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()


def write_subset_index(folder: str | Path, label: str, dataset, n: int | None, seed: int = 0) -> Path:
    """Publish the images :func:`fixed_subset` picks (the ones every attack of an evaluation runs on) as
    ``folder/<label>_n<n>_seed<seed>.csv``: position in the test split, image key, label and class name.
    Written once; the same arguments always give the same file."""
    import io

    positions = subset_positions(len(dataset), n, seed)
    subset = dataset if positions is None else dataset.subset(positions)
    positions = list(range(len(dataset))) if positions is None else positions
    frame = pd.DataFrame({"position": positions, "key": subset.keys, "label": subset.labels,
                          "class": [dataset.classnames[y] for y in subset.labels]})
    path = Path(folder) / f"{label}_n{'all' if n is None else n}_seed{seed}.csv"
    text = io.StringIO()
    frame.to_csv(text, index=False)
    if not path.is_file() or path.read_text() != text.getvalue():
        atomic_write_text(path, text.getvalue())
    return path


def _ensemble_skip(spec: AttackSpec, specs: Sequence[AttackSpec], correct: dict) -> torch.Tensor | None:
    """Images a weaker attack of the same call (at no larger eps) already broke: ``spec`` need not attack
    them, and its outcome is the worst case over itself and them."""
    rank = FAMILIES.index(spec.family)
    weaker = [correct[s.key] for s in specs
              if FAMILIES.index(s.family) < rank and s.row_eps <= spec.row_eps and s.key in correct]
    if not weaker:
        return None
    return ~torch.stack(weaker).all(0)


def _load_partial(folder: Path, signature: dict, batch: int):
    path = folder / f"batch{batch:06d}.json"
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a torn file cannot exist (atomic writes); an unreadable one is recomputed
    return saved if saved.get("signature") == signature else None


def evaluate(model, dataset, attacks: Iterable = ("clean",), *, eps: float | None = None, steps: int | None = None,
             batch_size: int = 128, max_n: int | None = None, seed: int = 0, meta: dict | None = None,
             progress: bool = True, partial_dir: str | Path | None = None,
             stop_after: int | None = None) -> pd.DataFrame:
    """Accuracy (%) of ``model`` on ``dataset`` under each attack, one row per attack.

    ``meta`` fills the identifying columns (dataset, method, shots, seed). Text features are computed
    once for the whole evaluation; ``max_n`` evaluates a fixed seeded subset (e.g. for AutoAttack).
    Each row keeps its per-image outcomes (``correct_mask``, :func:`capt.results.encode_mask`, in the
    evaluated order) and the attack's image-tower forward+backward passes per image (``passes``).

    Per-image outcomes are worst cases by construction. The clean image lies in every ball, so an image
    misclassified clean counts as misclassified under every attack (robust <= clean per image). Per
    batch the attacks run weakest family first (clean, noise, weak, strong); an ``ensemble`` kind
    (``aa``) skips the images a weaker attack of the same call at no larger eps already broke, and its
    outcome is the worst case over itself (every iterate it tried and the image it returns) and them
    (aa <= PGD per image when both are in the call).

    Everything runs in float32 (no autocast, also on CUDA: half-precision logits can mask gradients).
    Each batch's random starts depend only on ``seed`` and the batch's position (:func:`batch_seed`).
    ``partial_dir``: each finished batch's outcomes are written there atomically and reused when the
    same evaluation is started again, so an interrupted evaluation resumes from its last finished batch
    (the caller removes the folder once the rows are stored). ``stop_after``: stop (raising
    :class:`EvaluationInterrupted`) after that many newly computed batches (tests of the resume).
    """
    specs = [as_attack_spec(a, eps, steps) for a in attacks]
    if len({s.key for s in specs}) != len(specs):
        raise ValueError(f"the same attack is listed twice in {[s.label for s in specs]}; list each once")
    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} is empty: nothing to evaluate")
    if len(dataset.classnames) != len(model.classnames):
        raise ValueError(f"dataset {dataset.name!r} has {len(dataset.classnames)} classes but the model was built "
                         f"for {len(model.classnames)}; build PromptedCLIP with dataset.classnames")
    data = fixed_subset(dataset, max_n, seed)
    device = model.clip.logit_scale.device
    meta = {"dataset": getattr(dataset, "name", None), "method": None, "shots": None, "seed": None, **(meta or {})}
    model.eval()
    with torch.no_grad():
        text_features = model.encode_text().float()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    order = sorted(range(len(specs)), key=lambda i: FAMILIES.index(specs[i].family))
    signature = {"attacks": [s.key for s in specs], "n": len(data), "batch_size": batch_size, "seed": seed}
    folder = Path(partial_dir) if partial_dir is not None else None
    from tqdm import tqdm  # plain text bars: no ipywidgets needed in notebooks

    masks = {s.key: [] for s in specs}
    seconds = {s.key: 0.0 for s in specs}
    passes = {s.key: 0 for s in specs}
    computed = 0
    for b, (x, y) in enumerate(tqdm(loader, desc="eval " + ", ".join(s.label for s in specs), disable=not progress,
                                    leave=False)):
        saved = _load_partial(folder, signature, b) if folder is not None else None
        if saved is None:
            if stop_after is not None and computed >= stop_after:
                raise EvaluationInterrupted(f"stopped after {computed} batch(es) as asked (stop_after)")
            saved = _evaluate_batch(model, specs, order, x.to(device), y.to(device), text_features,
                                    batch_seed(seed, b))
            saved["signature"] = signature
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_text(folder / f"batch{b:06d}.json", json.dumps(saved))
            computed += 1
        for s in specs:
            r = saved["results"][s.key]
            masks[s.key].append(decode_mask(r["mask"], len(y)))
            seconds[s.key] += r["seconds"]
            passes[s.key] += r["passes"]

    precision = precision_of(model)
    depth = getattr(model, "depth", None)
    n_ctx = getattr(model, "n_ctx", None) if getattr(model, "prompt", None) != "none" else 0
    rows = []
    for s in specs:
        mask = np.concatenate(masks[s.key])
        n = len(mask)
        rows.append({**meta, "attack": s.label, "eps": s.row_eps, "eps_fraction": eps_fraction(s.row_eps),
                     "precision": precision, "steps": s.row_steps, "n": n, "classes": len(dataset.classnames),
                     "correct": int(mask.sum()), "accuracy": 100.0 * mask.sum() / n, "seconds": seconds[s.key],
                     "family": s.family, "passes": passes[s.key] / n, "depth": depth, "n_ctx": n_ctx,
                     MASK_COLUMN: encode_mask(mask)})
    return pd.DataFrame(rows, columns=list(dict.fromkeys(ROW_COLUMNS + list(meta))))


class EvaluationInterrupted(RuntimeError):
    """An evaluation stopped on purpose (``stop_after``) with its finished batches saved."""


def _evaluate_batch(model, specs, order, x, y, text_features, seed: int) -> dict:
    """Per-image outcomes, seconds and passes of every attack on one batch (weakest family first)."""
    with torch.no_grad():  # the clean image lies in every ball: an image wrong when clean is wrong under attack
        clean = model.logits_from_features(model.encode_image(x), text_features).argmax(1) == y
    correct, out = {}, {}
    for i in order:
        spec = specs[i]
        t0 = time.perf_counter()
        attack = make_attack(spec, model, num_classes=len(model.classnames), seed=seed, text_features=text_features)
        skip = _ensemble_skip(spec, specs, correct) if spec.kind.ensemble else None
        x_eval = attack(x, y, skip=skip) if skip is not None else attack(x, y)
        with torch.no_grad():
            ok = model.logits_from_features(model.encode_image(x_eval), text_features).argmax(1) == y
        ok &= clean
        stats = getattr(attack, "stats", None)
        if isinstance(attack, CaptAutoAttack):
            ok &= attack.last_correct  # its own forward passes count too (a worst case over every image tried)
        if skip is not None:
            ok &= ~skip
        correct[spec.key] = ok
        if stats is not None:
            n_passes = stats.fwd_bwd
        elif spec.kind.impl == "capt":  # fixed budgets: the table's cost is exact
            n_passes = round(attack_cost(spec) * len(y))
        else:
            n_passes = float("nan")  # torchattacks' attacks are not counted
        out[spec.key] = {"mask": encode_mask(ok.cpu().numpy()), "seconds": time.perf_counter() - t0,
                         "passes": n_passes}
    return {"results": out}


def accuracy(model, dataset, batch_size: int = 256) -> float:
    """Clean accuracy (%) in one call."""
    return float(evaluate(model, dataset, ["clean"], batch_size=batch_size, progress=False)["accuracy"].iloc[0])
