"""Experiments, the results store, the chapters' Settings and report tables: caching, no duplicates, clear
errors, intervals and verdicts."""

import pandas as pd
import pytest

import capt.experiments as E
from capt import plans, report
from capt.notebook import Settings
from capt.plans import Job
from capt.results import ResultStore, stable_key
from capt.train import TrainConfig
from conftest import MINI_RUN


@pytest.fixture()
def tiny_experiment(tmp_path, monkeypatch, tiny_clip):
    monkeypatch.setattr(E, "_clip", lambda model, pretrained, device: tiny_clip)
    return E.Experiment(tmp_path, progress=False, batch_size=64)


def runs(**kw):
    tc = TrainConfig(epochs=1, batch_size=16, lr=0.05, eps=4 / 255, alpha=2 / 255, steps=1)
    return E.grid(["zeroshot", "capt"], [1], [1, 2], "mini_shape", train=tc, **{**MINI_RUN, "depth": 2, **kw})


def test_grid_keeps_one_zeroshot_run_and_distinct_keys():
    rs = runs()
    assert [r.method for r in rs] == ["zeroshot", "capt", "capt"]
    assert len({r.key for r in rs}) == 3


def test_experiment_trains_once_and_skips_what_is_done(tiny_experiment, monkeypatch):
    attacks = ["clean", {"name": "pgd", "eps": 4 / 255, "steps": 2}]
    jobs = [Job(r, ("mini_shape", "mini_colour"), tuple(attacks), 20) for r in runs()]
    rows = tiny_experiment.run_jobs(jobs)
    assert len(rows) == 3 * 2 * 2
    assert set(rows["method"]) == {"zeroshot", "capt"}
    assert (rows.groupby(["run_key", "dataset"])["accuracy"].apply(lambda a: a.iloc[1] <= a.iloc[0])).all()
    calls = []
    monkeypatch.setattr(E, "train", lambda *a, **k: calls.append(1))
    again = tiny_experiment.run_jobs(jobs)
    assert calls == []  # nothing retrained, nothing re-evaluated
    pd.testing.assert_frame_equal(again, rows)
    assert len(ResultStore(tiny_experiment.out_dir).read()) == 12


def test_base_to_new_runs_train_on_base_and_test_on_new(tiny_experiment):
    tc = TrainConfig(epochs=1, batch_size=16, lr=0.05, eps=4 / 255, alpha=2 / 255, steps=1)
    spec = E.RunSpec("capt", "mini_size_shape[base]", shots=1, seed=1, train=tc, **{**MINI_RUN, "depth": 2})
    rows = tiny_experiment.evaluate(spec, ["mini_size_shape[base]", "mini_size_shape[new]"], ["clean"], max_n=20)
    assert rows["dataset"].tolist() == ["mini_size_shape[base]", "mini_size_shape[new]"]
    whole = E.load_dataset("mini_size_shape", "train").num_classes
    assert tiny_experiment.train_data(spec).num_classes == -(-whole // 2)  # CoCoOp's base half


def test_store_drops_duplicates_and_never_half_writes(tmp_path):
    store = ResultStore(tmp_path)
    rows = pd.DataFrame({"run_key": ["a", "a"], "eval_key": ["x", "y"], "attack": ["clean", "clean"],
                         "accuracy": [1.0, 2.0]})
    store.add(rows)
    store.add(rows)
    assert len(store.read()) == 2
    assert store.done("a", "x") and not store.done("b", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temp or lock file left


def test_objective_overrides_equal_to_the_method_default_share_its_key():
    base = E.RunSpec("capt", "mini_source", **MINI_RUN)
    assert E.RunSpec("capt", "mini_source", **MINI_RUN, objective_changes={"alpha_strategy": "frozen_confidence", "lam": 1.5}).key == base.key
    changed = E.RunSpec("capt", "mini_source", **MINI_RUN, objective_changes={"lam": 1.5, "ce_on": "adv"})
    assert changed.objective_changes == (("ce_on", "adv"),) and changed.key != base.key
    # the main experiment's CAPT run is an ablation's default variant: one training, not several
    S = Settings.from_profile("mini", "06_ablations", seeds=[1], shots=[16],
                              ablations=["alpha strategy", "lambda", "frozen teacher"])
    main = {r.key for r in plans.runs(S, methods=["capt"])}
    defaults = {r.key for g, label, r in plans.ablation_runs(S)
                if (g, label) in {("alpha strategy", "frozen_confidence"), ("lambda", "1.5"),
                                  ("frozen teacher", "with (adaptive alpha)")}}
    assert defaults == main


def test_stable_key_ignores_dict_order():
    assert stable_key({"a": 1, "b": [1, 2]}) == stable_key({"b": [1, 2], "a": 1})


@pytest.mark.parametrize("kwargs,match", [
    (dict(source="imagenette"), "unknown dataset 'imagenette'; valid choices: "),
    (dict(methods=["capt", "trades"]), "unknown method 'trades'"),
    (dict(eval_eps=-0.1), "eps .* must be >= 0"),
    (dict(eval_eps=3), "eps .* must be <= 1"),
    (dict(shots=[0]), "shots"),
    (dict(seeds=1), "seeds must be a list"),
    (dict(targets="mini_shape"), "targets must be a list"),
    (dict(depth=12), "depth=12 is larger than the encoder"),
    (dict(pgd_steps=0), "pgd_steps must be >= 1"),
    (dict(ablations=["gamma"]), "unknown ablation group 'gamma'"),
    (dict(datasets=["mini_shape[middle]"]), "unknown class subset 'middle'"),
])
def test_settings_reject_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Settings.from_profile("mini", "04_cross_dataset", **kwargs)


def _rows(seeds=(1, 2), n=200):
    """Rows with per-image masks: capt far ahead of fap under the strong attack, level on clean."""
    import numpy as np

    from capt.results import MASK_COLUMN, encode_mask

    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for method, clean, robust in (("capt", 0.60, 0.35), ("fap", 0.61, 0.10), ("zeroshot", 0.70, 0.01)):
            for attack, p in (("clean", clean), ("aa", robust), ("pgd-10", robust + 0.05)):
                mask = rng.random(n) < p
                out.append({"dataset": "d", "method": method, "seed": seed, "attack": attack, "eps": 4 / 255,
                            "n": n, "correct": int(mask.sum()), "accuracy": 100.0 * mask.mean(),
                            MASK_COLUMN: encode_mask(mask)})
    return pd.DataFrame(out)


def test_headline_table_is_compact_html_with_intervals_and_no_index():
    t = report.headline(_rows(), "aa", "caption")
    assert list(t.frame.columns) == ["method", "clean", "robust (AA)", "robust (PGD-10)"]
    assert list(t.frame["method"]) == ["zeroshot", "fap", "capt"]  # the house order
    html = t._repr_html_()
    assert html.startswith('<div class="capt-headline">') and "<table" in html and "<th></th>" not in html
    assert "±" not in html and "[" in t.frame.loc[2, "robust (AA)"]
    assert t.note.startswith("Mean over 2 seeds (zero-shot CLIP, which does not train, has one)")
    assert t.note.endswith("images per seed: 200.")


def test_one_seed_is_labelled_as_one_seed():
    t = report.headline(_rows(seeds=(1,)), "aa", "caption")
    assert t.note.startswith("One seed") and "± 0.0" not in repr(t)


def test_verdict_prints_the_interval_and_decides_only_when_it_excludes_zero():
    c = report.compare(_rows(), "aa").set_index("metric")
    assert c.loc["robust (AA)", "baseline"] == "fap" and c.loc["robust (AA)", "verdict"] == "win"
    assert c.loc["robust (AA)", "lo"] > 0
    x = c.loc["robust (AA)"]
    line = report.verdict(_rows(), "aa").splitlines()[1]
    assert line == (f"robust (AA): capt {x.ours:.1f} vs fap {x.theirs:.1f}: {x['diff']:+.1f} points, "
                    f"95 % interval [{x.lo:+.1f}, {x.hi:+.1f}] -> win")
    assert c.loc["clean", "verdict"] != "win" and c.loc["clean", "lo"] < 0 < c.loc["clean", "hi"]


def test_the_reading_quotes_the_table_it_sits_under():
    rows = _rows()
    text = report.reading(rows, "aa", "d").text
    table = report.compare(rows, "aa").set_index("metric")
    assert f"{table.loc['robust (AA)', 'ours']:.1f} %" in text and "**wins**" in text
    assert "**What the evidence supports (2 seeds):** CAPT is better on robust (AA)" in text


def test_result_keys_follow_the_mini_worlds_content(monkeypatch):
    """A store filled before a mini task's look changed must not answer for the new look: the run key (its
    training split) and the evaluation's data fingerprint carry the split's content hash."""
    import dataclasses

    from capt.data import miniworld as mw

    spec = E.RunSpec("capt", "mini_fill", shots=1, **MINI_RUN)
    before_run, before_test = spec.key, E.data_fingerprint("mini_fill", "test")
    assert before_test == mw.content_hash("mini_fill", "test") and E.data_fingerprint("imagenet", "test") is None
    changed = dataclasses.replace(mw.TASKS["mini_fill"], look=mw.Look(noise=20.0))
    monkeypatch.setitem(mw.TASKS, "mini_fill", changed)
    for cache in (mw._cached, mw.content_hash):
        cache.cache_clear()
    try:
        assert E.data_fingerprint("mini_fill", "test") != before_test
        assert E.RunSpec("capt", "mini_fill", shots=1, **MINI_RUN).key != before_run
        # zero-shot runs do not train: their key names the model only, the rows' eval keys carry the data
        assert E.RunSpec("zeroshot", "mini_fill", **MINI_RUN).key == E.RunSpec("zeroshot", "mini_shape", **MINI_RUN).key
    finally:
        monkeypatch.undo()
        for cache in (mw._cached, mw.content_hash):
            cache.cache_clear()
    assert spec.key == before_run and E.data_fingerprint("mini_fill", "test") == before_test


def test_competence_reads_chance_from_the_rows():
    """Chance is 1 / the number of classes each row carries: the report loads no dataset."""
    rows = _rows(seeds=(1,)).assign(role="source")
    rows = pd.concat([rows, rows.assign(dataset="e", role="target")], ignore_index=True)
    rows["classes"] = rows["dataset"].map({"d": 4, "e": 7})
    t = report.competence(rows[rows.method == "zeroshot"], "aa")
    assert list(t.frame["dataset"]) == ["d", "e"] and list(t.frame["chance"]) == [25.0, round(100 / 7, 1)]
