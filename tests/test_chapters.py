"""A chapter is one entry of :data:`capt.chapters.CHAPTERS` plus its notebook: the notebook, ``_toc.yml``,
the plans and the profiles must agree with the table, and a new entry is all the library needs."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
import yaml

from capt import chapters, plans
from capt.chapters import CHAPTERS, Chapter
from tools.notebook_params import notebook_defaults

ROOT = Path(__file__).resolve().parents[1]


def disagreements(table: dict[str, Chapter], notebooks: Path, toc: dict) -> list[str]:
    """Every way the notebooks, the table of contents and the plans differ from the chapter table."""
    out = []
    found = sorted(p.stem for p in notebooks.glob("*.ipynb"))
    if found != sorted(table):
        out.append(f"notebooks {found} != chapters {sorted(table)}")
    listed = [c["file"].rpartition("/")[2] for part in toc["parts"] for c in part["chapters"]
              if c["file"].startswith("book/experiments/")]
    if listed != list(table):
        out.append(f"_toc.yml lists {listed}, the chapter table {list(table)}")
    for c in table.values():
        path = notebooks / f"{c.name}.ipynb"
        if not path.is_file():
            continue
        if not callable(getattr(plans, c.plan, None)):
            out.append(f"{c.name}: no plan capt.plans.{c.plan}")
        if notebook_defaults(path) != {"profile": "mini", **{k: None for k in c.knobs}}:
            out.append(f"{c.name}: its parameters cell does not declare exactly the knobs {c.knobs}")
        nb = nbformat.read(path, as_version=4)
        heading = next(cell.source.splitlines()[0] for cell in nb.cells if cell.cell_type == "markdown")
        if heading != f"# {c.title}":
            out.append(f"{c.name}: heading {heading!r}, title {c.title!r}")
        code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
        for what, pattern in [("settings", rf'Settings\.for_chapter\("{c.name}"'),
                              ("plan", rf"plans\.{c.plan}\(S\)"),
                              ("table file", rf'"tables" / "{re.escape(c.table)}"')]:
            if not re.search(pattern, code):
                out.append(f"{c.name}: the notebook does not use its {what} ({pattern})")
        if (c.focus is not None) != (f'report.focus("{c.name}"' in code):
            out.append(f"{c.name}: the notebook's report.focus and the table's focus disagree")
    return out


def test_the_book_agrees_with_the_chapter_table():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert disagreements(CHAPTERS, ROOT / "notebooks", toc) == []
    assert list(plans.PLANS) == list(CHAPTERS)


def test_a_disagreement_is_found(tmp_path):
    """The check fails when a notebook, the toc or the plan differs from the table."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for p in (ROOT / "notebooks").glob("*.ipynb"):
        (folder / p.name).write_bytes(p.read_bytes())
    renamed = {**CHAPTERS, "04_cross_dataset": replace(CHAPTERS["04_cross_dataset"], plan="cross_datasets",
                                                       title="Cross-dataset")}
    assert disagreements(renamed, folder, toc) == [
        "04_cross_dataset: no plan capt.plans.cross_datasets",
        "04_cross_dataset: heading '# Cross-dataset generalisation', title 'Cross-dataset'",
        r"04_cross_dataset: the notebook does not use its plan (plans\.cross_datasets\(S\))"]
    toc["parts"][1]["chapters"].pop()
    (folder / "06_ablations.ipynb").unlink()
    assert disagreements(CHAPTERS, folder, toc)[:2] == [
        f"notebooks {sorted(set(CHAPTERS) - {'06_ablations'})} != chapters {sorted(CHAPTERS)}",
        f"_toc.yml lists {list(CHAPTERS)[:-1]}, the chapter table {list(CHAPTERS)}"]


def test_a_new_chapter_is_one_table_entry(monkeypatch):
    """With one more entry, profiles accept the chapter's name and Settings take its knobs: nothing
    else in the library lists chapters."""
    from capt.notebook import Settings
    from capt.profiles import load_profile, notebook_names

    new = Chapter("08_more", "More", ("eps_list",), "cross_dataset", "more.csv")
    monkeypatch.setitem(CHAPTERS, new.name, new)
    profile = {**load_profile("ci"), "notebooks": {"08_more": {"eps_list": [2 / 255]}}}
    assert notebook_names(profile)[-1] == "08_more"
    assert Settings.from_profile(profile, "08_more").eps_list == [2 / 255]
    with pytest.raises(ValueError, match="unknown chapter '09_none'; valid choices: 00_mini_world.*08_more"):
        chapters.get_chapter("09_none")
