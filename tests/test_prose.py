"""The book's prose holds no typed-in accuracy: every number a reading quotes is generated from the run
it describes (capt.report), so the text cannot drift from the tables beside it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Appendices whose numbers describe a machine or a test, not this book's run: benchmark timings and the
# benchmark's own accuracies (performance), the bad-input and attack-sanity tables rendered by the tests
# (reliability), compute shares of the sweep's cost model (sweeps). book/published.md quotes the paper.
NOT_RUN_RESULTS = {"appendix_performance.md", "reliability.md", "sweeps.md", "published.md"}
# A number that reads as an accuracy or a gap between accuracies: "36.7 %", "36.7%", "2.5 points",
# "36.7 percent". The confidence level of an interval ("95 % interval") is not one.
ACCURACY = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(%|percent\b|points?\b|pp\b)")
LEVEL = re.compile(r"\b95\s?% (?:interval|confidence)")


def _prose(text: str) -> str:
    """Markdown without what is not prose: fenced blocks, inline code, math, MyST directives' options."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\$[^$\n]*\$", " ", text)
    return LEVEL.sub(" ", text)


def typed_accuracies(text: str) -> list[str]:
    return [m.group(0) for m in ACCURACY.finditer(_prose(text))]


def sources() -> list[tuple[str, str]]:
    out = [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "book").glob("*.md"))
           if p.name not in NOT_RUN_RESULTS]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(nb, as_version=4).cells
        out += [(f"{nb.relative_to(ROOT)} cell {i}", c.source) for i, c in enumerate(cells) if c.cell_type == "markdown"]
    return out


def test_the_books_prose_holds_no_typed_in_accuracy():
    found = {where: hits for where, text in sources() if (hits := typed_accuracies(text))}
    assert not found, f"typed-in accuracies (generate them with capt.report instead): {found}"


def test_the_prose_test_sees_every_chapter():
    where = [w for w, _ in sources()]
    assert "book/intro.md" in where
    assert all(any(w.startswith(f"notebooks/{nb.name}") for w in where) for nb in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("sentence", [
    "CAPT reaches 36.7 % robust accuracy.", "CAPT reaches 36.7% robust accuracy.",
    "a lead of 2.5 points over AdvVPT", "it keeps 84 percent of its clean accuracy"])
def test_a_typed_in_number_in_a_chapters_prose_makes_it_fail(tmp_path, sentence, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text((ROOT / "book" / "intro.md").read_text())
    nb = nbformat.read(ROOT / "notebooks" / "04_cross_dataset.ipynb", as_version=4)
    nb.cells[0].source += f"\n\n{sentence}"
    nbformat.write(nb, nb_dir / "04_cross_dataset.ipynb")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="typed-in accuracies"):
        test_the_books_prose_holds_no_typed_in_accuracy()


@pytest.mark.parametrize("text", ["a 95 % interval over seeds", "`pytest -k 10%`", "$\\epsilon = 4/255$",
                                  "```\nCAPT 36.7 %\n```", "PGD-10 at 4/255, 16 shots, 3 seeds"])
def test_what_is_not_an_accuracy_passes(text):
    assert typed_accuracies(text) == []
