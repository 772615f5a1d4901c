"""What the book shows and records (issue 24): figures only when they can show something, tables turned
when methods outnumber the other key, papermill quiet about accepted settings, every row's eps fraction
and precision, the published evaluation subsets, and the execution-statistics page from recorded timings."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from capt import plots, report
from capt.evaluate import fixed_subset, write_subset_index
from capt.results import ResultStore, encode_mask
from capt.validation import eps_fraction


def _rows(methods, datasets, shots=(16,), n=20):
    out = []
    for i, m in enumerate(methods):
        for j, d in enumerate(datasets):
            for k in shots:
                for attack in ("clean", "aa"):
                    mask = np.arange(n) < (5 + i + j + (attack == "clean") * 5)
                    out.append({"method": m, "dataset": d, "shots": k, "seed": 1, "attack": attack, "eps": 3 / 255,
                                "n": n, "correct": int(mask.sum()), "accuracy": 100 * mask.mean(),
                                "correct_mask": encode_mask(mask)})
    return pd.DataFrame(out)


# -- figures ------------------------------------------------------------------------------------------------
def test_a_line_plot_with_one_x_value_is_not_drawn_and_says_why(tmp_path):
    one = _rows(["apt", "capt"], ["d"], shots=(16,))
    fig = plots.lines(one[one.attack == "aa"], x="shots", xlabel="shots per class", title="Robust accuracy vs shots")
    assert isinstance(fig, plots.NotDrawn)
    assert fig._repr_markdown_() == ("*Robust accuracy vs shots: not drawn, this run has only shots per class = 16; "
                                     "a line needs two or more (the profile sets them).*")
    stale = tmp_path / "shots.png"
    stale.write_bytes(b"old")
    plots.save(fig, stale)
    assert not stale.exists()  # an earlier run's figure does not outlive the run that cannot draw it
    two = _rows(["apt", "capt"], ["d"], shots=(4, 16))
    drawn = plots.lines(two[two.attack == "aa"], x="shots")
    assert not isinstance(drawn, plots.NotDrawn)
    [ax] = drawn.axes
    assert sorted({round(x) for line in ax.lines for x in line.get_xdata()}) == [4, 16]
    plots.save(drawn, tmp_path / "two.png")
    assert (tmp_path / "two.png").read_bytes()[:4] == b"\x89PNG"


# -- tables -------------------------------------------------------------------------------------------------
def test_detail_puts_methods_in_rows_when_they_outnumber_the_other_key():
    many = _rows(["zeroshot", "apt", "fap", "capt"], ["a", "b"])
    t = report.detail(many, "aa", index=["dataset", "shots"]).frame
    assert list(t.columns) == ["method", "a, 16 shots", "b, 16 shots"]
    assert list(t["method"]) == ["zeroshot", "apt", "fap", "capt"]
    assert list(t["b, 16 shots"]) == [30.0, 35.0, 40.0, 45.0]  # (5 + i + 1) of 20 images right
    few = _rows(["apt", "capt"], ["a", "b", "c"])
    t = report.detail(few, "aa", index="dataset").frame
    assert list(t.columns) == ["dataset", "apt", "capt"] and list(t["dataset"]) == ["a", "b", "c"]


# -- papermill ------------------------------------------------------------------------------------------------
def test_papermill_is_quiet_about_accepted_settings_and_warns_about_others(tmp_path, caplog):
    """Importing papermill loads capt's plugin (an entry point), so nothing needs calling first."""
    import papermill as pm

    from capt.paths import notebooks_dir

    with caplog.at_level(logging.WARNING, logger="papermill"):
        pm.execute_notebook(str(notebooks_dir() / "04_cross_dataset.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"profile": "ci", "shifts": ["mini_source_a"], "out_dir": "x",
                                        "no_such_setting": 1}, prepare_only=True, log_output=False)
    warned = [r.getMessage() for r in caplog.records if "unknown parameter" in r.getMessage()]
    assert warned == ["Passed unknown parameter: no_such_setting"]


def test_papermill_on_the_command_line_is_quiet_about_accepted_settings(tmp_path):
    """The issue's own command: ``papermill ... -p shifts ...`` from a shell, where capt runs nothing
    before papermill starts."""
    from capt.paths import notebooks_dir

    papermill = str(Path(sys.executable).parent / "papermill")
    done = subprocess.run([papermill, str(notebooks_dir() / "04_cross_dataset.ipynb"), str(tmp_path / "out.ipynb"),
                           "-p", "profile", "ci", "-p", "shifts", "[mini_source_a]", "-p", "methods", "[capt]",
                           "-p", "no_such_setting", "1", "--prepare-only"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    warned = [line.split("Passed unknown parameter: ")[1].strip() for line in done.stderr.splitlines()
              if "Passed unknown parameter: " in line]
    assert warned == ["no_such_setting"]


# -- what rows record -------------------------------------------------------------------------------------------
def test_eps_fraction_keeps_what_was_written():
    assert [eps_fraction(e) for e in (0.0, 1 / 255, 3 / 255, 8 / 255, 1 / 256, 0.5)] == [
        "0", "1/255", "3/255", "8/255", "1/256", "1/2"]


def test_an_old_store_without_the_new_columns_reads_completed(tmp_path):
    old = pd.DataFrame({"run_key": ["r", "r"], "eval_key": ["e1", "e2"], "attack": ["clean", "pgd-10"],
                        "eps": [0.0, 3 / 255], "n": [4, 4], "correct": [2, 1]})
    old.to_csv(tmp_path / "results.csv", index=False)
    rows = ResultStore(tmp_path).read()
    assert list(rows.columns[3:6]) == ["eps", "eps_fraction", "precision"]
    assert list(rows["eps_fraction"]) == ["0", "3/255"] and set(rows["precision"]) == {"fp32"}
    store = tmp_path / "other"  # rows that are not evaluations (no eps) are read as they are
    store.mkdir()
    pd.DataFrame({"run_key": ["r"], "eval_key": ["e"], "x": [1]}).to_csv(store / "results.csv", index=False)
    assert list(ResultStore(store).read().columns) == ["run_key", "eval_key", "x"]


def test_the_subset_index_lists_exactly_the_images_evaluated(tmp_path):
    from capt.data import load_dataset

    data = load_dataset("mini_shape", "test")
    path = write_subset_index(tmp_path, "mini_shape", data, 30, 0)
    index = pd.read_csv(path)
    assert path.name == "mini_shape_n30_seed0.csv" and len(index) == 30
    subset = fixed_subset(data, 30, 0)
    assert list(index["key"]) == subset.keys and list(index["label"]) == subset.labels
    assert list(index["key"]) == [data.keys[p] for p in index["position"]]
    assert write_subset_index(tmp_path, "mini_shape", data, None, 0).name == "mini_shape_nall_seed0.csv"


# -- execution statistics ---------------------------------------------------------------------------------------
def test_the_execution_page_is_generated_from_the_records(tmp_path):
    from capt import execution

    nb = tmp_path / "02_in_distribution.ipynb"
    nb.write_text(json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "papermill": {"duration": 75.4, "end_time": "2026-12-05T08:00:00.5", "parameters": {"profile": "ci"}},
        execution.KEY: {"cpu": "Test CPU", "cores": 2, "gpu": None, "python": "3.11.7", "torch": "2.x",
                        "capt_commit": "abc123"}}}))
    store = tmp_path / "store"
    (store / "sweep").mkdir(parents=True)
    pd.DataFrame({"run_key": ["a", "b", "c"]}).to_csv(store / "results.csv", index=False)
    outcome = lambda name, s: {"name": name, "status": "done", "result": {"seconds": s, "host": "h", "device": "cpu",
                                                                        "threads": 1}}
    (store / "sweep" / "report-1.json").write_text(json.dumps({"tasks": 3, "skipped": 0, "seconds": 130.0, "outcomes": [
        outcome("capt-x-16shot-seed1-k1", 40.0), outcome("capt-x-16shot-seed2-k2", 60.0), outcome("zeroshot-k3", 5.0)]}))
    page = execution.write_page([nb], [store], tmp_path / "execution.md").read_text()
    assert "| 02_in_distribution | ci | 1 min 15 s | 2026-12-05T08:00:00 | Test CPU, 2 cores, no GPU | python 3.11.7, torch 2.x, capt abc123 |" in page
    assert "3 rows (`results.csv`)" in page and "3 runs, 0 already complete, 2 min 10 s wall" in page
    assert "| capt | 2 | 1 min 40 s | 50.0 s | h, cpu, 1 thread(s) |" in page
    assert "| zeroshot | 1 | 5.0 s | 5.0 s |" in page
    assert [execution._duration(x) for x in (59.94, 59.96, 179.6, 3600)] == ["59.9 s", "1 min 0 s", "3 min 0 s",
                                                                          "60 min 0 s"]


def test_the_execution_page_says_where_the_worker_time_went(tmp_path):
    """Training seconds from the runs' histories, each attack's from the store's rows, with the tower passes
    per evaluated image (weighted by how many images each row evaluated)."""
    from capt import execution

    store = tmp_path / "store"
    for key, secs in (("r1", [30.0, 30.0]), ("r2", [60.0])):
        (store / "runs" / key).mkdir(parents=True)
        pd.DataFrame({"step": range(len(secs)), "seconds": secs}).to_csv(store / "runs" / key / "history.csv",
                                                                          index=False)
    pd.DataFrame({"attack": ["clean", "aa", "aa", "pgd-10"], "n": [100, 100, 300, 100],
                  "seconds": [1.0, 200.0, 100.0, 19.0], "passes": [0.0, 120.0, 40.0, 10.0]}).to_csv(
        store / "results.csv", index=False)
    t = execution.time_by_stage(store)
    assert list(t["stage"]) == ["evaluation: aa", "training (all runs)", "evaluation: pgd", "evaluation: clean"]
    assert list(t["worker time"]) == ["5 min 0 s", "2 min 0 s", "19.0 s", "1.0 s"]
    assert list(t["share"]) == ["68 %", "27 %", "4 %", "0 %"]
    assert list(t["tower passes per image"]) == ["60", "–", "10", "0"]  # (100*120 + 300*40) / 400 = 60
    assert list(t["images evaluated"]) == ["400", "–", "100", "100"]
    page = execution.write_page([], [store], tmp_path / "execution.md").read_text()
    assert "Where the worker time went" in page and "| evaluation: aa | 5 min 0 s | 68 % | 400 | 60 |" in page
    pd.DataFrame({"run_key": ["a"]}).to_csv(store / "results.csv", index=False)  # an old store: no costs
    assert execution.time_by_stage(store).empty


# -- the intro's glance ------------------------------------------------------------------------------------------
def test_the_glance_names_chapters_by_title_with_links_and_draws_the_summary_figure(tmp_path):
    from types import SimpleNamespace

    rows = _rows(["apt", "fap", "capt"], ["s", "t1", "t2"], n=200)
    rows.to_csv(tmp_path / "cross_dataset.csv", index=False)
    S = SimpleNamespace(strong_attack="aa", source="s")
    found = {"04_cross_dataset": (S, tmp_path / "cross_dataset.csv")}
    text = report.write_glance(found, tmp_path / "glance.md", titles={"04_cross_dataset": "Cross-dataset"}).read_text()
    assert "| {doc}`Cross-dataset </book/experiments/04_cross_dataset>` | the target tasks |" in text
    assert text.startswith("```{figure} /book/experiments/glance.png\n")
    assert (tmp_path / "glance.png").read_bytes()[:4] == b"\x89PNG"
    c = report.compare(rows[rows.dataset != "s"], "aa")
    clean = c[c.metric == "clean"].iloc[0]  # the interval is one unit: no-break spaces inside it
    assert f"{clean['diff']:+.1f}\u00a0[{clean.lo:+.1f},\u00a0{clean.hi:+.1f}]" in text
    plain = report.write_glance(found, tmp_path / "plain.md").read_text()
    assert "| 04_cross_dataset |" in plain and "{figure}" not in plain  # without titles: ids, no figure
