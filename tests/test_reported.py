"""Published reference values: the data, its lookup, and the book page that renders it."""

from pathlib import Path

import pandas as pd
import pytest

from capt.methods import METHODS
from capt.reported import PAPERS, REPORTED, STATUS, beside, markdown_table, reference_rows

PAGE = Path(__file__).resolve().parent.parent / "book" / "published.md"


def test_the_book_page_renders_exactly_the_data():
    text = PAGE.read_text()
    start = text.index("-->\n", text.index("capt.reported.markdown_table()")) + 4
    end = text.index("<!-- end of the generated table -->")
    assert text[start:end].strip() == markdown_table().strip()


def test_every_value_names_its_source_and_a_method_we_run():
    assert all(r.method in METHODS and r.status == STATUS and any(r.source.startswith(k) for k in PAPERS)
               for r in REPORTED)
    assert all("Table" in r.source for r in REPORTED if r.source.startswith("FAP"))
    assert all(v is None or 0 <= v <= 100 for r in REPORTED for v in (r.clean, r.robust))


def test_fap_table_8_reference_rows():
    rows = reference_rows("04_cross_dataset", model="ViT-B-32", eps=1 / 255, attack="PGD-100")
    got = {m: (c, r) for m, c, r in zip(rows["method"], rows["clean"], rows["robust"])}
    assert got == {"zeroshot": (61.91, 4.26), "advvlp": (48.22, 23.25), "advmaple": (48.03, 23.93),
                   "fap": (47.76, 24.23)}
    assert reference_rows("04_cross_dataset", model="ViT-B-16").empty  # another setting: nothing to compare
    strong = reference_rows("07_attack_strength")
    assert dict(zip(strong["method"], strong["robust"])) == {"advmaple": 17.40, "fap": 17.41}


def test_beside_puts_the_reported_values_next_to_ours():
    ours = pd.DataFrame({"method": ["fap", "capt"], "clean": [50.0, 52.0], "robust": [25.0, 27.0]})
    out = beside(ours, "04_cross_dataset", attack="PGD-100")
    assert out["robust (reported)"].tolist()[0] == 24.23 and pd.isna(out["robust (reported)"].tolist()[1])
    assert out["reported in"].tolist()[0].endswith("Table 8")


def test_unknown_chapter_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid choices: 04_cross_dataset, 07_attack_strength"):
        reference_rows("99_nope")


def test_chapter_view_puts_the_published_values_beside_ours_only_for_their_setting():
    from capt import report
    from capt.notebook import Settings
    from capt.reported import chapter_view

    rows = pd.DataFrame({"method": ["fap"] * 4 + ["capt"] * 4,
                         "dataset": ["imagenet", "imagenet", "eurosat", "eurosat"] * 2,
                         "attack": ["clean", "pgd-100"] * 4, "n": [100] * 8,
                         "accuracy": [50.0, 20.0, 40.0, 30.0, 60.0, 25.0, 44.0, 27.0]})
    t = chapter_view(rows, Settings.from_profile("paper", "04_cross_dataset")).frame.set_index("method")
    assert t.loc["fap", "clean"] == 45.0 and t.loc["fap", "robust"] == 25.0  # the mean over the datasets
    assert t.loc["fap", "clean (reported)"] == 47.76 and t.loc["fap", "robust (reported)"] == 24.23
    assert pd.isna(t.loc["capt", "clean (reported)"]) and "Table 8" in t.loc["fap", "reported in"]
    out = chapter_view(rows, Settings.from_profile("mini", "04_cross_dataset"))
    assert isinstance(out, report.Reading) and "No published numbers for this setting (mini, eps 3/255" in out.text


def test_apt_protocol_rows_are_reported_on_the_page_only():
    """DEFEAT's re-run in APT's protocol (16 shots, 11-set mean): APT ahead of FAP, no chapter shows it."""
    rows = reference_rows()
    defeat = rows[rows["source"].str.startswith("DEFEAT")]
    assert {m: (c, r) for m, c, r in zip(defeat["method"], defeat["clean"], defeat["robust"])} == \
        {"apt": (51.08, 20.26), "fap": (50.50, 19.82)}
    assert defeat["chapter"].isna().all() and (defeat["shots"] == 16).all()
    assert reference_rows("04_cross_dataset", model="ViT-B-32-quickgelu").empty
