"""The one chapter table: each chapter of the book is one :class:`Chapter` here plus its notebook.

Everything that lists chapters reads this table: the profiles (which chapter names they may set), the
notebooks' :class:`capt.notebook.Settings` (a chapter's own knobs), :mod:`capt.plans` (a chapter's plan,
by name), :mod:`capt.report` (the rows a chapter's headline is about), the ``capt`` command (the table
file the intro's results-at-a-glance reads) and the tests that hold ``_toc.yml`` and the notebooks to it.
Ground floor: it imports only :mod:`capt.validation` (a plan is named, and looked up in :mod:`capt.plans`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .validation import check_choice


def _top_shots(S) -> list:
    counted = [k for k in S.shots if k != "all"]
    return [0, max(counted) if counted else "all"]  # zero-shot rows carry shots 0


def _in_distribution(rows, S):
    top = _top_shots(S)
    return (rows[(rows["dataset"] == S.datasets[0]) & rows["shots"].astype(str).isin(map(str, top))],
            f"{S.datasets[0]}, {top[1]} shots per class")


@dataclass(frozen=True)
class Chapter:
    """``knobs``: the settings its notebook's parameters cell declares (every other value comes from the
    profile); ``plan``: the :mod:`capt.plans` function that says what it computes; ``table``: the file
    (in ``<out_dir>/tables``) its rows are saved to; ``focus``: ``(rows, Settings) -> (rows, phrase)``,
    the rows its headline, figure and reading are about (None: the chapter has no CAPT-vs-baseline
    headline, so the intro's results-at-a-glance leaves it out)."""

    name: str
    title: str
    knobs: tuple[str, ...]
    plan: str
    table: str
    focus: Callable | None = None


CHAPTERS: dict[str, Chapter] = {c.name: c for c in [
    Chapter("00_mini_world", "The mini world", (), "zeroshot_robustness", "mini_world.csv"),
    Chapter("01_zeroshot_robustness", "Zero-shot CLIP is not robust", ("eps_list",), "zeroshot_robustness",
            "zeroshot_robustness.csv"),
    Chapter("02_in_distribution", "In-distribution few-shot robustness", ("datasets", "shots"), "in_distribution",
            "in_distribution.csv", _in_distribution),
    Chapter("03_distribution_shift", "Distribution shift", (), "distribution_shift", "distribution_shift.csv",
            lambda rows, S: (rows[rows["dataset"] != S.source], "the shifted sets")),
    Chapter("04_cross_dataset", "Cross-dataset generalisation", (), "cross_dataset", "cross_dataset.csv",
            lambda rows, S: (rows[rows["dataset"] != S.source], "the target tasks")),
    Chapter("05_base_to_new", "Base-to-new generalisation", ("datasets",), "base_to_new", "base_to_new.csv",
            lambda rows, S: (rows[rows["dataset"].str.endswith("[new]")], "the new classes")),
    Chapter("06_ablations", "Ablations of CAPT", ("ablations",), "ablations", "ablations.csv"),
    Chapter("07_attack_strength", "Attack strength and gradient masking", ("eps_list", "steps_list"),
            "attack_strength", "attack_strength.csv"),
]}


def get_chapter(name: str) -> Chapter:
    check_choice("chapter", name, CHAPTERS)
    return CHAPTERS[name]
