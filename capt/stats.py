"""Intervals and paired comparisons: what a table may show and what a verdict may claim.

Every evaluation row keeps its per-image outcomes (``correct_mask``), so two methods evaluated on the
same images can be compared image by image. Intervals come from a two-stage bootstrap: seeds are
resampled with replacement, then the images of each chosen (seed, dataset) cell. Resampling images of
one cell with replacement is the same as drawing the counts of each outcome pattern from a multinomial
(correct / wrong for one method; both right, only A, only B, neither for a pair), which is how it is done
here: exact, and fast enough for thousands of replicates.

A statistic is a mean over seeds of a mean over the datasets of a group (one dataset, or e.g. all
targets of the cross-dataset chapter). A method that does not train (zero-shot) has one seed, 0; paired
with a trained method it stands beside every seed. With one seed the interval covers images only, and
tables say "1 seed" instead of pretending to a spread over seeds.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .results import MASK_COLUMN, decode_mask

LEVEL = 0.95
N_BOOT = 4000
TIE_MARGIN = 2.5  # points: a "tie" is an interval that contains 0 and lies within +-TIE_MARGIN
VERDICTS = ("win", "loss", "tie", "undecided")
_CELL = ("dataset", "attack", "eps")  # what makes two rows evaluations of the same images under the same attack


def binomial_interval(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of an accuracy, in percent."""
    if n <= 0:
        raise ValueError("an accuracy interval needs at least one image (n >= 1)")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must lie in [0, n], got {correct} of {n}")
    z = _z(level)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def format_interval(mean: float, lo: float, hi: float, decimals: int = 1) -> str:
    """``"21.3 [19.1, 23.5]"``: a mean and its interval, in the book's one format."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (mean, lo, hi)):
        return "—"
    return f"{mean:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"


def seeds_label(seeds: int) -> str:
    return "1 seed" if seeds == 1 else f"{seeds} seeds"


# -- cells ----------------------------------------------------------------------------------------
def _check_rows(rows: pd.DataFrame, need_mask: bool) -> None:
    need = ["method", "seed", "dataset", "attack", "n", "correct"] + ([MASK_COLUMN] if need_mask else [])
    missing = [c for c in need if c not in rows.columns]
    if missing:
        fix = (" (rows without per-image outcomes cannot be paired: re-run the evaluation with this "
               "version of capt, which keeps them)" if MASK_COLUMN in missing else "")
        raise ValueError(f"rows lack the column(s) {', '.join(missing)}{fix}")
    if rows.empty:
        raise ValueError("no rows to summarise")


def _cell_keys(rows: pd.DataFrame) -> list[str]:
    return [c for c in _CELL if c in rows.columns]


def _masks(group: pd.DataFrame) -> dict:
    """``{(seed, cell...): bool mask}`` of one method's rows (duplicates must agree: one evaluation each)."""
    out = {}
    keys = _cell_keys(group)
    for _, r in group.iterrows():
        k = (int(r["seed"]), *[r[c] for c in keys])
        m = decode_mask(r[MASK_COLUMN], int(r["n"]))
        if int(m.sum()) != int(r["correct"]):
            raise ValueError(f"row {k} of {r['method']!r}: its mask counts {int(m.sum())} correct images but "
                             f"the row says {int(r['correct'])}; the results row is corrupt")
        if k in out and not np.array_equal(out[k], m):
            raise ValueError(f"{r['method']!r} has two different evaluations of {k}; keep one per seed and cell")
        out[k] = m
    return out


def _two_stage(cells: dict[int, list[tuple[int, np.ndarray, np.ndarray]]], n_boot: int, seed: int,
               level: float) -> tuple[float, float, float]:
    """Mean over seeds of the mean over cells of ``w . counts / n`` and its two-stage percentile interval.

    ``cells[s]`` holds, per dataset cell of seed ``s``, ``(n, probs, weights)``: the observed frequency of
    each outcome pattern and the value each pattern contributes (e.g. +1 for "only A right")."""
    rng = np.random.default_rng(seed)
    seeds = sorted(cells)
    point = float(np.mean([np.mean([float(p @ w) for _, p, w in cells[s]]) for s in seeds]))
    S = len(seeds)
    choice = rng.integers(0, S, (n_boot, S)) if S > 1 else np.zeros((n_boot, 1), dtype=int)
    stat = np.zeros(n_boot)
    for j in range(S):  # slot j of every replicate holds seed seeds[choice[:, j]], its images resampled afresh
        slot = np.zeros(n_boot)
        for si, s in enumerate(seeds):
            pick = choice[:, j] == si
            k = int(pick.sum())
            if not k:
                continue
            per_cell = [rng.multinomial(n, p / p.sum(), size=k) @ w / n for n, p, w in cells[s]]
            slot[pick] = np.mean(per_cell, axis=0)
        stat += slot / S
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stat, [alpha, 1 - alpha])
    return 100 * point, 100 * float(lo), 100 * float(hi)


# -- public ---------------------------------------------------------------------------------------
def accuracy_table(rows: pd.DataFrame, by: Sequence[str] = ("method", "dataset", "attack"),
                   level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per group of ``by``: the mean accuracy (over seeds, of the mean over the group's datasets) and
    its ``level`` interval, with the number of seeds and of images per seed.

    Columns: ``by`` + ``mean``, ``lo``, ``hi``, ``seeds``, ``n`` (images per seed, summed over the
    group's datasets) and ``label`` (``format_interval``, with "(1 seed)" where there is one).
    Per-image masks are not needed: resampling one cell's images is a binomial draw of its count.
    """
    _check_rows(rows, need_mask=False)
    by = list(by)
    unknown = [b for b in by if b not in rows.columns]
    if unknown:
        raise ValueError(f"cannot group by {unknown}: the rows have columns {sorted(rows.columns)}")
    out = []
    groups = rows.groupby(by, sort=False, dropna=False) if by else [((), rows)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        cells: dict[int, list] = {}
        for _, r in g.iterrows():
            n, k = int(r["n"]), int(r["correct"])
            cells.setdefault(int(r["seed"]), []).append((n, np.array([k, n - k], float) / n, np.array([1.0, 0.0])))
        mean, lo, hi = _two_stage(cells, n_boot, seed, level)
        n_per_seed = int(np.mean([sum(n for n, _, _ in c) for c in cells.values()]))
        label = format_interval(mean, lo, hi) + (" (1 seed)" if len(cells) == 1 else "")
        out.append({**dict(zip(by, key)), "mean": mean, "lo": lo, "hi": hi, "seeds": len(cells), "n": n_per_seed,
                    "label": label})
    return pd.DataFrame(out, columns=by + ["mean", "lo", "hi", "seeds", "n", "label"])


def decide(lo: float, hi: float, tie_margin: float = TIE_MARGIN) -> str:
    """What a paired interval of a difference (A - B, in points) allows one to say.

    ``win``/``loss``: the interval excludes 0. ``tie``: it contains 0 and lies within +-``tie_margin``
    (any difference is smaller than that). ``undecided``: it contains 0 but is too wide to call a tie.
    """
    if lo > 0:
        return "win"
    if hi < 0:
        return "loss"
    return "tie" if -tie_margin <= lo and hi <= tie_margin else "undecided"


def paired_difference(rows: pd.DataFrame, a: str, b: str, by: Sequence[str] = ("dataset", "attack"),
                      level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0,
                      tie_margin: float = TIE_MARGIN) -> pd.DataFrame:
    """Per group of ``by``: accuracy of method ``a`` minus method ``b`` (points), paired on the same
    images, with its two-stage bootstrap interval and the verdict (:func:`decide`).

    Rows of ``a`` and ``b`` are matched on seed, dataset, attack and eps; a method with only seed 0
    (zero-shot) is matched with every seed of the other. Both must have evaluated the same images
    (same ``n``). Columns: ``by`` + ``a``, ``b``, ``diff``, ``lo``, ``hi``, ``seeds``, ``n``, ``verdict``,
    ``label``.
    """
    _check_rows(rows, need_mask=True)
    if a == b:
        raise ValueError("paired_difference needs two different methods")
    present = set(rows["method"])
    for m in (a, b):
        if m not in present:
            raise ValueError(f"method {m!r} has no rows; methods present: {', '.join(sorted(present))}")
    by = [x for x in by if x != "method"]
    out = []
    groups = rows.groupby(by, sort=False, dropna=False) if by else [((), rows)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        ma, mb = _masks(g[g["method"] == a]), _masks(g[g["method"] == b])
        if not ma or not mb:
            continue
        seeds_a, seeds_b = {k[0] for k in ma}, {k[0] for k in mb}
        cells: dict[int, list] = {}
        for k, xa in ma.items():
            kb = k if k in mb else ((0, *k[1:]) if seeds_b == {0} else None)
            if kb is None and seeds_a == {0}:
                continue  # handled from b's side below
            if kb not in mb:
                raise ValueError(f"{b!r} has no evaluation matching {a!r}'s {k}; pair methods run on the same "
                                 "seeds, datasets and attacks")
            cells.setdefault(k[0], []).append(_pattern(xa, mb[kb], k))
        if seeds_a == {0} and seeds_b != {0}:
            for k, xb in mb.items():
                ka = (0, *k[1:])
                if ka not in ma:
                    raise ValueError(f"{a!r} has no evaluation matching {b!r}'s {k}")
                cells.setdefault(k[0], []).append(_pattern(ma[ka], xb, k))
        diff, lo, hi = _two_stage(cells, n_boot, seed, level)
        verdict = decide(lo, hi, tie_margin)
        n_per_seed = int(np.mean([sum(n for n, _, _ in c) for c in cells.values()]))
        label = f"{diff:+.1f} [{lo:+.1f}, {hi:+.1f}]" + (" (1 seed)" if len(cells) == 1 else "")
        out.append({**dict(zip(by, key)), "a": a, "b": b, "diff": diff, "lo": lo, "hi": hi, "seeds": len(cells),
                    "n": n_per_seed, "verdict": verdict, "label": label})
    return pd.DataFrame(out, columns=by + ["a", "b", "diff", "lo", "hi", "seeds", "n", "verdict", "label"])


def _pattern(xa: np.ndarray, xb: np.ndarray, key) -> tuple[int, np.ndarray, np.ndarray]:
    if len(xa) != len(xb):
        raise ValueError(f"the two methods evaluated different images for {key} ({len(xa)} vs {len(xb)}); "
                         "pair only evaluations of the same test subset")
    n = len(xa)
    only_a, only_b = int((xa & ~xb).sum()), int((~xa & xb).sum())
    counts = np.array([only_a, only_b, n - only_a - only_b], float)
    return n, counts / n, np.array([1.0, -1.0, 0.0])
