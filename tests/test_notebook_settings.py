"""Profiles are the one place parameter values live: how a chapter's Settings are built, checked and
overridden, from any folder, and what papermill's forms of passing values do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from capt import plans
from capt.chapters import CHAPTERS
from capt.notebook import Settings
from capt.paths import resolve, workspace
from capt.profiles import PROFILES, load_profile, profile_names

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
PAPERMILL = [sys.executable, "-m", "papermill"]


def _prepare(tmp_path, *args, chapter="04_cross_dataset") -> dict:
    """``papermill --prepare-only`` (nothing executed), then the chapter's own first line, run on the
    injected values: the Settings the notebook would run with."""
    out = tmp_path / "out.ipynb"
    subprocess.run([*PAPERMILL, str(NB / f"{chapter}.ipynb"), str(out), *args, "--prepare-only"],
                   check=True, capture_output=True, text=True, cwd=tmp_path)
    nb = nbformat.read(out, as_version=4)
    namespace: dict = {}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and ("parameters" in tags or "injected-parameters" in tags):
            exec(cell.source, namespace)  # noqa: S102 - the cells papermill wrote: assignments only
    namespace.pop("__builtins__")
    return namespace


def test_papermill_with_the_paper_profile_yields_the_papers_settings(tmp_path):
    ns = _prepare(tmp_path, "-p", "profile", "paper")
    S = Settings.for_chapter("04_cross_dataset", ns)
    assert (S.model, S.pretrained, S.pgd_steps, S.eval_eps) == ("ViT-B-32", "openai", 100, 1 / 255)
    assert S.pgd().label == "pgd-100" and S.max_n is None and S.aa_n == 1000 and S.seeds == [1, 2, 3]
    assert S.output == (workspace() / "outputs" / "paper").resolve()


def test_a_flat_yaml_file_passed_with_f_overrides_the_profile(tmp_path):
    flat = tmp_path / "mine.yaml"
    flat.write_text(yaml.safe_dump({"profile": "mini", "seeds": [1], "eval_eps": "2/255"}))
    S = Settings.for_chapter("04_cross_dataset", _prepare(tmp_path, "-f", str(flat)))
    assert (S.model, S.seeds, S.eval_eps, S.pgd_steps) == ("mini", [1], 2 / 255, 10)


def test_p_passes_lists_as_text_and_they_still_work(tmp_path):
    S = Settings.for_chapter("04_cross_dataset", _prepare(tmp_path, "-p", "profile", "mini", "-p", "seeds", "[1, 2]"))
    assert S.seeds == [1, 2]


def test_the_old_profile_file_form_fails_at_once_naming_the_right_one(tmp_path):
    ns = _prepare(tmp_path, "-f", str(ROOT / "profiles" / "paper.yaml"))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) 'description', 'notebooks', 'parameters', 'skip'; "
                                         r"this looks like a profile file .* -p profile paper"):
        Settings.for_chapter("04_cross_dataset", ns)


def test_an_injected_name_no_setting_takes_is_an_error_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) 'sedes'; valid choices: profile, model, .*seeds"):
        Settings.for_chapter("04_cross_dataset", {"profile": "mini", "sedes": [1]})
    # what a kernel holds besides the parameters is not mistaken for one
    S = Settings.for_chapter("04_cross_dataset", {"profile": "ci", "In": [], "Out": {}, "_": 1, "os": os,
                                                  "Settings": Settings, "exit": None})
    assert S.profile == "ci"


def test_defaults_are_the_papers_and_the_paper_profile_adds_only_the_machine():
    default, paper = Settings(), Settings.from_profile("paper", "04_cross_dataset")
    assert [(k, getattr(default, k)) for k in Settings.names() if getattr(default, k) != getattr(paper, k)] == [
        ("profile", None), ("data_root", None), ("device", None)]


def test_a_mini_value_lives_in_one_file_and_reaches_every_chapter(tmp_path, monkeypatch):
    """Change one value of profiles/mini.yaml and every chapter of the mini and ci profiles sees it."""
    import capt.profiles as P

    folder = tmp_path / "profiles"
    folder.mkdir()
    for p in PROFILES.glob("*.yaml"):
        (folder / p.name).write_text(p.read_text())
    mini = yaml.safe_load((folder / "mini.yaml").read_text())
    changed = mini["parameters"]["epochs"] + 3  # any other value will do
    mini["parameters"]["epochs"] = changed
    (folder / "mini.yaml").write_text(yaml.safe_dump(mini))
    monkeypatch.setattr(P, "PROFILES", folder)
    for profile in ("mini", "ci"):
        for chapter in CHAPTERS:
            expected = 1 if profile == "ci" else changed  # ci sets its own epochs
            assert Settings.from_profile(profile, chapter).epochs == expected


def test_each_profile_value_is_written_once():
    """No value of a chapter repeats what its profile's base (or the defaults) already give."""
    for name in profile_names():
        data = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
        base = Settings.from_profile(data["base"]) if data.get("base") else Settings()
        mine = Settings.from_profile(name)
        for k in data.get("parameters") or {}:
            assert getattr(mine, k) != getattr(base, k), f"profiles/{name}.yaml repeats {k} = {getattr(base, k)!r}"
        for chapter, values in (data.get("notebooks") or {}).items():
            # without this file's line, the chapter would get its base's chapter value, else the common one
            inherited = load_profile(data["base"])["notebooks"].get(chapter, {}) if data.get("base") else {}
            ch = Settings.from_profile(name, chapter)
            for k in values:
                without = Settings.from_profile(name, **({k: inherited[k]} if k in inherited else {}))
                assert getattr(ch, k) != getattr(without, k), f"profiles/{name}.yaml: {chapter} repeats {k}"


def test_validation_loads_nothing(monkeypatch):
    import capt.experiments as E
    import capt.models as M

    def boom(*a, **k):
        raise AssertionError("validation loaded a model")

    monkeypatch.setattr(M, "load_clip", boom)
    monkeypatch.setattr(E, "load_clip", boom)
    S = Settings.from_profile("mini", "06_ablations")
    assert plans.ablation_runs(S)
    with pytest.raises(ValueError, match="depth=12 is larger than the encoder"):
        Settings.from_profile("mini", "04_cross_dataset", depth=12)


def test_profiles_and_outputs_resolve_the_same_from_any_folder(tmp_path, monkeypatch):
    here = Settings.from_profile("ci", "04_cross_dataset").output
    monkeypatch.chdir(tmp_path)
    assert Settings.from_profile("ci", "04_cross_dataset").output == here
    assert load_profile("ci")["name"] == "ci"
    monkeypatch.setenv("CAPT_HOME", str(tmp_path / "home"))
    assert Settings.from_profile("ci", "04_cross_dataset").output == tmp_path / "home" / "outputs" / "ci"
    assert resolve("/abs/x") == Path("/abs/x")


def test_profiles_work_outside_a_checkout(tmp_path):
    """From an installed copy of the package (no notebooks/, no pyproject.toml beside it)."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(ROOT / "capt", site / "capt", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("from capt.notebook import Settings; import capt.paths as P; "
            "S = Settings.from_profile('paper', '04_cross_dataset'); "
            "print(P.checkout(), S.model, S.output)")
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(tmp_path / "home")}
    env.pop("CAPT_HOME", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         check=True).stdout.split()
    assert out == ["None", "ViT-B-32", str(tmp_path / "home" / "capt" / "outputs" / "paper")]


@pytest.mark.parametrize("kwargs,match", [
    (dict(profile="nope"), "unknown profile 'nope'; valid choices: apt, apt_eps1, ci, mini, paper"),
    (dict(chapter="99_nope"), "unknown chapter '99_nope'; valid choices: 00_mini_world"),
    (dict(eval_eps="4/0"), "eval_eps must be a number or a fraction like 4/255"),
    (dict(strong_attack="nope"), "unknown strong_attack 'nope'"),
    (dict(aa_n=0), "aa_n must be >= 1"),
])
def test_bad_values_name_the_fix(kwargs, match):
    profile, chapter = kwargs.pop("profile", "mini"), kwargs.pop("chapter", "04_cross_dataset")
    with pytest.raises(ValueError, match=match):
        Settings.from_profile(profile, chapter, **kwargs)


@pytest.mark.parametrize("objectives,match", [
    ({"fapp": {"lam": 0.5}}, "unknown method 'fapp'; valid choices: zeroshot"),
    ({"fap": {"lamb": 0.5}}, "unknown objective setting\\(s\\) 'lamb' for method 'fap'; valid choices: kind, lam"),
    ({"fap": {"lam": -1}}, "lambda \\(consistency weight\\) must be >= 0"),
    ({"advmaple": {"lam": 0.5}}, "'lam' changes nothing for 'advmaple' \\(its 'ce_adv' objective reads no setting\\)"),
    ({"fap": {"alpha_strategy": "fixed"}}, "'alpha_strategy' changes nothing for 'fap'"),
    ({"fap": {"kind": "trades"}}, "another kind of objective is another method; register it under its own name"),
    ({"fap": 0.5}, "objectives maps a method to changes of its objective, e.g. objectives="),
])
def test_a_method_objective_change_that_nothing_reads_or_that_is_wrong_is_refused(objectives, match):
    with pytest.raises(ValueError, match=match):
        Settings.from_profile("paper", objectives=objectives)


def _runs_changed(settings, plain):
    """Both settings' runs by (method, seed), and the (method, seed)s whose run key differs."""
    keyed = {(r.method, r.seed): r for r in plans.runs(settings)}
    before = {(r.method, r.seed): r for r in plans.runs(plain)}
    assert keyed.keys() == before.keys()
    return keyed, before, sorted(k for k in keyed if keyed[k].key != before[k].key)


def test_a_profiles_objective_change_reaches_that_methods_runs_only():
    """``objectives`` (the mini profile gives FAP its own lambda) changes that method's runs, and no other's;
    papermill's text form works; an ablation's change of CAPT's objective goes on top of the profile's."""
    mini = Settings.from_profile("mini", "02_in_distribution", objectives={"fap": {"lam": 0.5}})
    plain = Settings.from_profile("mini", "02_in_distribution", objectives={})
    keyed, before, changed = _runs_changed(mini, plain)
    assert changed == [("fap", s) for s in mini.seeds]
    assert all(keyed[k].objective_changes == (("lam", 0.5),) for k in changed)
    assert Settings.from_profile("mini", objectives="{fap: {lam: 0.5}}").objectives == mini.objectives
    # the mini profile's own (benchmarks/mini_v4_probe.md, session 3)
    assert Settings.from_profile("mini").objectives == {"fap": {"lam": 0.5}, "trades_maple": {"lam": 0.5}}
    # the method's own value is no change: the run is the profile-free one
    same = Settings.from_profile("mini", "02_in_distribution", objectives={"fap": {"lam": 1.5}})
    assert [r.key for r in plans.runs(same)] == [r.key for r in plans.runs(plain)]
    capt = Settings.from_profile("mini", "06_ablations", objectives={"capt": {"lam": 3.0}})
    ablation = dict(((g, label), r) for g, label, r in plans.ablation_runs(capt))
    assert ablation[("lambda", "0.5")].objective_changes == (("lam", 0.5),)
    assert ablation[("alpha strategy", "fixed")].objective_changes == (("alpha_strategy", "fixed"), ("lam", 3.0))


def test_committed_chapters_open_with_the_question_and_hide_their_setup():
    """Reader-first pages: the question, then results; parameters and setup collapsed or hidden."""
    for chapter in CHAPTERS:
        nb = nbformat.read(NB / f"{chapter}.ipynb", as_version=4)
        assert nb.cells[0].cell_type == "markdown" and "**The question.**" in nb.cells[0].source, chapter
        code = [c for c in nb.cells if c.cell_type == "code"]
        for c in code:
            tags = set(c.metadata.get("tags", []))
            assert tags & {"hide-cell", "hide-input", "remove-cell", "remove-input"}, (chapter, c.source[:60])
            if tags & {"parameters", "injected-parameters"}:
                assert "hide-cell" in tags, chapter
        html = [o["data"]["text/html"] for c in code for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
        if chapter != "00_mini_world" or html:
            assert any('class="capt-headline"' in h for h in html), f"{chapter} shows no headline table"
        assert not any("<th></th>" in h for h in html), f"{chapter} shows an index column"


def test_clean_accuracy_is_measured_on_the_whole_test_set_when_the_attacks_take_a_subset():
    """The mini profile attacks a fixed subset (max_n, aa_n) but reads clean accuracy on every image; the
    paper profile runs PGD on everything and needs no extra clean pass."""
    mini = Settings.from_profile("mini", "04_cross_dataset")
    evals = [(tuple(map(str, attacks)), n) for attacks, n in plans.evaluations(mini)]
    assert evals[0] == (("clean",), None) and mini.aa_n is not None and mini.max_n == mini.aa_n
    assert {a for attacks, n in evals if n == mini.aa_n for a in attacks} == {"clean", str(mini.strong()), str(mini.pgd())}
    paper = Settings.from_profile("paper", "04_cross_dataset")
    assert all(attacks != ("clean",) for attacks, _ in plans.evaluations(paper))
    assert "clean on all" in mini.describe()


@pytest.mark.parametrize("training,match", [
    ({"advvlpp": {"lr": 0.005}}, "unknown method 'advvlpp'; valid choices: zeroshot"),
    ({"zeroshot": {"lr": 0.005}}, "'zeroshot' does not train, so its trainer settings change nothing; remove it"),
    ({"advvlp": {"train_eps": 0.01}}, "unknown setting\\(s\\) 'train_eps'; valid choices: lr, epochs, batch_size"),
    ({"advvlp": {"lr": 0}}, "lr must be > 0"),
    ({"advvlp": {"epochs": 2.5}}, "epochs must be an integer"),
    ({"advvlp": 0.005}, "training maps a method to its own trainer settings, e.g. training="),
])
def test_a_method_training_change_that_is_wrong_is_refused(training, match):
    with pytest.raises(ValueError, match=match):
        Settings.from_profile("paper", training=training)


def test_a_profiles_training_change_reaches_that_methods_runs_only():
    """``training`` (the mini profile gives AdvVLP its own lr) changes that method's trainer and run keys, no
    other's; papermill's text form works; the profile's own value is no change."""
    mini = Settings.from_profile("mini", "02_in_distribution")
    plain = Settings.from_profile("mini", "02_in_distribution", training={})
    keyed, before, changed = _runs_changed(mini, plain)
    assert changed == [("advvlp", s) for s in mini.seeds]
    assert all(keyed[k].train.lr == 0.005 and before[k].train.lr == mini.lr == 0.01 for k in changed)
    assert all(keyed[k].train == before[k].train for k in keyed if k not in changed)
    # the mini profile's own (benchmarks/mini_v4_probe.md, session 4)
    assert mini.training == {"advvlp": {"lr": 0.005}}
    assert Settings.from_profile("mini", training="{advvlp: {lr: 0.005}}").training == mini.training
    same = Settings.from_profile("mini", "02_in_distribution", training={"advvlp": {"lr": 0.01}})
    assert [r.key for r in plans.runs(same)] == [r.key for r in plans.runs(plain)]
