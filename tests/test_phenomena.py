"""The mini-world chapter's phenomena checks (issue 21): each check reads the rows it should and holds
exactly when its threshold is met; CAPT's alpha spread is pooled from the runs' histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capt import phenomena
from capt.notebook import Settings
from capt.results import encode_mask

N = 200  # images per dataset


def _row(method, dataset, seed, attack, acc, shots=16, run_key=None):
    mask = np.arange(N) < round(acc * N / 100)
    return {"method": method, "dataset": dataset, "shots": 0 if method == "zeroshot" else shots, "seed": seed,
            "attack": attack, "eps": 5 / 255, "n": N, "correct": int(mask.sum()), "accuracy": 100 * mask.mean(),
            "correct_mask": encode_mask(mask), "run_key": run_key or f"{method}-{seed}"}


# accuracy (clean, aa) per method on the source, the targets and the shifts
WORLD = {
    "zeroshot": {"source": (65, 2), "targets": (70, 4), "shifts": (40, 1)},
    "advmaple": {"source": (55, 20), "targets": (60, 15), "shifts": (35, 5)},
    "fap": {"source": (50, 19), "targets": (58, 14), "shifts": (33, 5)},
    "capt": {"source": (58, 21), "targets": (63, 15), "shifts": (36, 6)},
}


def _rows(S, datasets: dict, clean_of_seed=None) -> pd.DataFrame:
    out = []
    for method, where in WORLD.items():
        for seed in ([0] if method == "zeroshot" else [1, 2, 3]):
            for role, names in datasets.items():
                clean, robust = where[role]
                if clean_of_seed and method in clean_of_seed:
                    clean = clean_of_seed[method].get(seed, clean)
                for d in names:
                    out += [_row(method, d, seed, "clean", clean), _row(method, d, seed, "aa", robust)]
    return pd.DataFrame(out)


@pytest.fixture
def world(monkeypatch, tmp_path):
    """chapter_rows answering from a made-up run; returns a setter for seed-specific clean accuracies."""
    state = {"clean_of_seed": None}

    def fake(profile, chapter):
        S = Settings.from_profile("mini", chapter, out_dir=str(tmp_path))
        sets = {"02_in_distribution": {"source": [S.source]},
                "03_distribution_shift": {"source": [S.source], "shifts": list(S.shifts)},
                "04_cross_dataset": {"source": [S.source], "targets": list(S.targets)}}[chapter]
        return S, _rows(S, sets, state["clean_of_seed"])

    monkeypatch.setattr(phenomena, "chapter_rows", fake)
    return state


def test_every_check_reads_its_rows(world):
    t = phenomena.checks("mini", card={"report": {"ceiling": {"epochs": 8, "n": 300, "clean": 70.0, "robust": 25.0}}})
    got = dict(zip(t["check"], zip(t["measured"], t["holds"])))
    assert got["zero-shot: clean on mini_source between 55 and 75 %"] == ("65.0 %", "yes")
    assert got["zero-shot: aa on mini_source ≤ 5 %"] == ("2.0 %", "yes")
    assert got["zero-shot: targets' mean aa ≤ 10 %"] == ("4.0 %", "yes")
    assert got["advmaple, 16 shots: aa on mini_source ≥ 15 % and ≥ 4× zero-shot"] == (
        "20.0 % (10.0× zero-shot)", "yes")
    assert got["advmaple, 16 shots: clean on mini_source between 5 and 20 points below zero-shot's"] == (
        "+10.0 points below (55.0 %)", "yes")
    assert got["cross-dataset: advmaple's targets' mean aa ≥ zero-shot's + 8 points"] == (
        "15.0 % vs 4.0 % (+11.0)", "yes")
    assert got["cross-dataset: advmaple's targets' mean clean below zero-shot's"] == ("60.0 % vs 70.0 %", "yes")
    assert got["shifts: advmaple's mean aa ≥ zero-shot's + 3 points"] == ("5.0 % vs 1.0 % (+4.0)", "yes")
    assert got["fap: clean within 10 points of advmaple's"] == ("50.0 % vs 55.0 % (-5.0)", "yes")
    assert got["stability: every seed's clean within 10 points of its method's median"][1] == "yes"
    # no history in the made-up store: alpha is not measured, and the row says so
    assert got["capt: alpha varies (sd ≥ 0.1; between 10 and 90 % of training images below 0.5)"] == ("–", "–")
    ceiling = [k for k in got if k.startswith("ceiling")]
    assert got[ceiling[0]] == ("70.0 % clean, 25.0 % aa; advmaple reaches 20.0 %", "–")
    assert "checks hold on this run" in phenomena.reading(t)


def test_a_collapsed_seed_and_a_failing_check_say_no(world):
    world["clean_of_seed"] = {"fap": {2: 25}}  # one seed of FAP in a low-clean mode
    t = phenomena.checks("mini", card={})
    got = dict(zip(t["check"], zip(t["measured"], t["holds"])))
    assert got["stability: every seed's clean within 10 points of its method's median"] == (
        "widest: fap seed 2, 25.0 points", "NO")
    text = phenomena.reading(t)
    assert text.startswith(f"{(t['holds'] == 'yes').sum()} of {t['holds'].isin(['yes', 'NO']).sum()} checks hold")
    assert "**Not shown by this miniature:** stability" in text


def test_alpha_spread_pools_the_histories(tmp_path):
    S = Settings.from_profile("mini", "02_in_distribution", out_dir=str(tmp_path))
    # two runs: alpha 0.2 on every image of one, 0.8 on the other -> mean 0.5, sd 0.3, half below 0.5
    for key, a in (("k1", 0.2), ("k2", 0.8)):
        (S.output / "runs" / key).mkdir(parents=True)
        pd.DataFrame({"alpha": [a] * 4, "alpha_sq": [a * a] * 4, "alpha_low": [float(a < 0.5)] * 4,
                      "seconds": [0.1] * 4}).to_csv(S.output / "runs" / key / "history.csv", index=False)
    rows = pd.DataFrame({"method": ["capt", "capt", "fap"], "run_key": ["k1", "k2", "k3"]})
    got = phenomena.alpha_spread(S, rows)
    assert got["runs"] == 2
    assert got["mean"] == pytest.approx(0.5) and got["sd"] == pytest.approx(0.3) and got["below_half"] == 0.5
    assert phenomena.alpha_spread(S, rows[rows.method == "fap"]) is None


def test_the_checks_read_the_store_and_never_train(tmp_path, monkeypatch):
    """Under a profile whose chapters have not run (here: an empty store), every check says "–" and nothing is
    trained or attacked: the mini-world chapter must not start the paper's experiments."""
    real = Settings.from_profile
    monkeypatch.setattr(Settings, "from_profile", classmethod(
        lambda cls, profile, chapter=None, **o: real.__func__(cls, profile, chapter, out_dir=str(tmp_path), **o)))
    t = phenomena.checks("ci", card={})
    assert (t["holds"] == "–").all() and (t["measured"] == "–").all()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results.csv").exists()
    assert phenomena.reading(t).startswith("No check could be made: the store does not hold")
