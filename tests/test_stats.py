"""Intervals and paired verdicts on cases whose answer is known in closed form."""

import math

import numpy as np
import pandas as pd
import pytest

from capt.results import encode_mask
from capt.stats import accuracy_table, binomial_interval, decide, format_interval, paired_difference


def _row(method, seed, mask, dataset="d", attack="aa", eps=4 / 255):
    mask = np.asarray(mask, bool)
    return {"method": method, "seed": seed, "dataset": dataset, "attack": attack, "eps": eps, "n": len(mask),
            "correct": int(mask.sum()), "accuracy": 100 * mask.mean(), "correct_mask": encode_mask(mask)}


def _mask(n, k, offset=0):
    m = np.zeros(n, bool)
    m[offset:offset + k] = True
    return m


def test_wilson_interval_known_values():
    lo, hi = binomial_interval(50, 100)
    assert (round(lo, 1), round(hi, 1)) == (40.4, 59.6)
    lo, hi = binomial_interval(0, 100)
    assert lo == 0 and round(hi, 2) == 3.70


def test_one_seed_interval_is_the_binomial_one():
    rows = pd.DataFrame([_row("m", 1, _mask(1000, 300))])
    t = accuracy_table(rows, by=["method"], n_boot=20000)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 1000) * 100  # 2.84 points
    assert t["mean"].iloc[0] == pytest.approx(30.0)
    assert t["lo"].iloc[0] == pytest.approx(30 - half, abs=0.25)
    assert t["hi"].iloc[0] == pytest.approx(30 + half, abs=0.25)
    assert t["seeds"].iloc[0] == 1 and t["label"].iloc[0].endswith("(1 seed)")
    assert "± 0.0" not in t["label"].iloc[0]


def test_seed_spread_widens_the_interval():
    same = pd.DataFrame([_row("m", s, _mask(1000, 300)) for s in (1, 2, 3)])
    spread = pd.DataFrame([_row("m", s, _mask(1000, k)) for s, k in ((1, 200), (2, 300), (3, 400))])
    a, b = accuracy_table(same, by=["method"]).iloc[0], accuracy_table(spread, by=["method"]).iloc[0]
    assert a["mean"] == pytest.approx(b["mean"]) == pytest.approx(30.0)
    assert (b["hi"] - b["lo"]) > 3 * (a["hi"] - a["lo"])


def test_mean_over_datasets_in_a_group():
    rows = pd.DataFrame([_row("m", 1, _mask(100, 20), dataset="x"), _row("m", 1, _mask(300, 240), dataset="y")])
    t = accuracy_table(rows, by=["method"])
    assert t["mean"].iloc[0] == pytest.approx(50.0)  # (20 % + 80 %) / 2: datasets weigh equally
    assert t["n"].iloc[0] == 400


def test_paired_difference_known_case():
    # 1000 images: A alone right on 100, B alone right on 50, both on 300 -> diff +5 points,
    # SE = sqrt((p10 + p01 - (p10 - p01)^2) / n) = 1.214 points.
    a = np.zeros(1000, bool); b = np.zeros(1000, bool)
    a[:400] = True; b[100:450] = True
    rows = pd.DataFrame([_row("capt", 1, a), _row("base", 1, b)])
    d = paired_difference(rows, "capt", "base", by=["dataset"], n_boot=20000).iloc[0]
    se = math.sqrt((0.1 + 0.05 - 0.05 ** 2) / 1000) * 100
    assert d["diff"] == pytest.approx(5.0)
    assert d["lo"] == pytest.approx(5 - 1.96 * se, abs=0.25) and d["hi"] == pytest.approx(5 + 1.96 * se, abs=0.25)
    assert d["verdict"] == "win"
    flipped = paired_difference(rows, "base", "capt", by=["dataset"]).iloc[0]
    assert flipped["diff"] == pytest.approx(-5.0) and flipped["verdict"] == "loss"


def test_pairing_is_tighter_than_independent_intervals():
    # Both methods right on nearly the same 500 images: their accuracies have wide intervals,
    # their difference a narrow one.
    a, b = _mask(1000, 500), _mask(1000, 502, offset=3)  # 3 images only A gets, 5 only B
    rows = pd.DataFrame([_row("a", 1, a), _row("b", 1, b)])
    d = paired_difference(rows, "a", "b", by=[]).iloc[0]
    t = accuracy_table(rows, by=["method"]).set_index("method")
    assert (d["hi"] - d["lo"]) < 0.25 * (t.loc["a", "hi"] - t.loc["a", "lo"])
    assert d["verdict"] == "tie"


def test_identical_methods_tie_and_noise_is_undecided():
    m = _mask(200, 80)
    rows = pd.DataFrame([_row("a", 1, m), _row("b", 1, m)])
    d = paired_difference(rows, "a", "b", by=[]).iloc[0]
    assert (d["diff"], d["lo"], d["hi"], d["verdict"]) == (0.0, 0.0, 0.0, "tie")
    rng = np.random.default_rng(0)
    rows = pd.DataFrame([_row("a", 1, rng.random(60) < 0.5), _row("b", 1, rng.random(60) < 0.5)])
    assert paired_difference(rows, "a", "b", by=[]).iloc[0]["verdict"] == "undecided"


def test_zeroshot_single_seed_pairs_with_every_seed():
    zs = _mask(500, 50)
    rows = pd.DataFrame([_row("zeroshot", 0, zs)] + [_row("capt", s, _mask(500, 150)) for s in (1, 2, 3)])
    d = paired_difference(rows, "capt", "zeroshot", by=[]).iloc[0]
    assert d["diff"] == pytest.approx(20.0) and d["seeds"] == 3 and d["verdict"] == "win"
    back = paired_difference(rows, "zeroshot", "capt", by=[]).iloc[0]
    assert back["diff"] == pytest.approx(-20.0) and back["seeds"] == 3


def test_decide_and_format():
    assert [decide(0.1, 3), decide(-3, -0.1), decide(-1, 2), decide(-3, 1)] == ["win", "loss", "tie", "undecided"]
    assert format_interval(21.34, 19.06, 23.55) == "21.3 [19.1, 23.6]"


def test_bad_rows_are_refused_with_the_fix():
    rows = pd.DataFrame([_row("a", 1, _mask(10, 5)), _row("b", 1, _mask(12, 5))])
    with pytest.raises(ValueError, match="different images"):
        paired_difference(rows, "a", "b", by=[])
    with pytest.raises(ValueError, match="per-image outcomes cannot be paired"):
        paired_difference(rows.drop(columns="correct_mask"), "a", "b")
    with pytest.raises(ValueError, match="methods present: a, b"):
        paired_difference(rows, "a", "c")
    bad = pd.DataFrame([{**_row("a", 1, _mask(10, 5)), "correct": 7}, _row("b", 1, _mask(10, 5))])
    with pytest.raises(ValueError, match="corrupt"):
        paired_difference(bad, "a", "b", by=[])
