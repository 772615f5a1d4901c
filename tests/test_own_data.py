"""A dataset the user brings (``folder:/abs/path``): layouts, splits, content keys, a chapter through
papermill, damage found mid-run, few classes, and the APT profile's dry run.

The bad-input messages of user folders are cases of ``tests/test_bad_input.py`` (counted in the
reliability appendix); this file checks what works.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import capt
from capt.data import get_spec, load_dataset
from capt.data.folder import build_index, folder_index, parse, record_split
from capt.experiments import Experiment, RunSpec, data_fingerprint
from capt import plans
from capt.notebook import Settings

from conftest import MINI_RUN
from user_folders import write_image, write_tree

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "book" / "own_data.md"
BEGIN, END = "<!-- worked example: begin", "<!-- worked example: end -->"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


# -- layouts and splits ---------------------------------------------------------------------------------
def test_a_flat_tree_is_split_by_seed_and_the_split_is_written_under_the_outputs(tmp_path):
    root = write_tree(tmp_path / "shapes", "flat", per_class=10)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    name = f"folder:{root}"
    index = folder_index(name)
    assert index.layout == "flat" and index.classnames == ("circle", "square", "star")
    # CoOp's proportions per class: 5 train, 2 val, 3 test of 10; every image in exactly one split
    assert [index.counts(s) for s in ("train", "val", "test")] == [[5] * 3, [2] * 3, [3] * 3]
    files = [r[0] for s in index.splits.values() for r in s]
    assert sorted(files) == sorted(str(p.relative_to(root)) for p in root.rglob("img_*"))
    # the seed decides the split: the same seed the same split, another seed another one
    assert build_index(parse(name)).splits == index.splits
    other = folder_index(name + "?split_seed=2")
    assert other.splits["train"] != index.splits["train"] and other.counts("train") == index.counts("train")
    # the split file: CoOp's format, under the outputs, and the user's folder untouched
    path = record_split(name, tmp_path / "out" / "splits")
    assert path.parent == tmp_path / "out" / "splits" and path.name.startswith("folder-shapes-")
    split = json.loads(path.read_text())
    assert set(split) == {"train", "val", "test"}
    assert split["test"] == [[rel, y, index.classnames[y]] for rel, y, _ in index.splits["test"]]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_subtrees_classnames_templates_and_a_coop_split_file(tmp_path):
    root = write_tree(tmp_path / "photos", "subtrees", per_class=3)
    (root / "classnames.txt").write_text("# folder display name\ncircle red circle\n")
    (root / "templates.txt").write_text("a photo of a {}.\na drawing of a {}.\n")
    ds = load_dataset(f"folder:{root}", "test")
    assert ds.classnames == ["red circle", "square", "star"] and ds.templates == ["a photo of a {}.",
                                                                                  "a drawing of a {}."]
    assert len(ds) == 9 and get_spec(f"folder:{root}").splits == ("train", "val", "test")
    # every file kind decodes to a 3-channel [0, 1] tensor (greyscale, palette and CMYK included)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape[0] == 3 and 0 <= float(x.min()) and float(x.max()) <= 1 and 0 <= y < 3
    # a CoOp split file in the folder decides the split
    coop = tmp_path / "coop"
    write_tree(coop, "flat", per_class=2)
    files = sorted(str(p.relative_to(coop)) for p in coop.rglob("img_*"))
    entries = [[f, ["circle", "square", "star"].index(f.split("/")[0]), f.split("/")[0]] for f in files]
    (coop / "split_mine.json").write_text(json.dumps({"train": entries[::2], "val": [], "test": entries[1::2]}))
    index = folder_index(f"folder:{coop}")
    assert index.layout == "split_file" and index.counts("train") == [1, 1, 1]


def test_a_shift_is_test_only_and_shares_its_sources_classes(tmp_path):
    src = write_tree(tmp_path / "shapes", "flat", per_class=4)
    sketches = write_tree(tmp_path / "sketches", "flat", per_class=2,
                          classes={"circle": "circle", "star": "star"})  # a subset, like ImageNet-R
    name = f"folder:{sketches}?shift_of=folder:{src}"
    spec = get_spec(name)
    assert spec.role == "shift" and spec.shift_of == f"folder:{src}" and spec.splits == ("test",)
    assert len(load_dataset(name, "test")) == 4
    s = Settings.from_profile("ci", "03_distribution_shift", source=f"folder:{src}", shifts=[name], shots=[1])
    assert s.shifts == [name]


# -- result keys follow the content ----------------------------------------------------------------------
def test_an_edited_folder_gives_new_keys(tmp_path):
    root = write_tree(tmp_path / "shapes", "flat", per_class=4)
    name = f"folder:{root}"
    run = RunSpec(method="apt", source=name, shots=1, **MINI_RUN)
    zs = RunSpec(method="zeroshot", source=name, **MINI_RUN)
    key, train_fp, test_fp = run.key, data_fingerprint(name, "train"), data_fingerprint(name, "test")
    assert RunSpec(method="apt", source=name, shots=1, **MINI_RUN).key == key  # stable while unchanged
    write_image(root / "star" / "img_new", "star", (200, 200, 40), 3)  # a file added
    assert RunSpec(method="apt", source=name, shots=1, **MINI_RUN).key != key
    assert data_fingerprint(name, "test") != test_fp or data_fingerprint(name, "train") != train_fp
    assert zs.key == RunSpec(method="zeroshot", source=name, **MINI_RUN).key  # zero-shot trains on nothing
    # a file rewritten in place with another size: a fresh index (another process) sees it
    before = build_index(parse(name)).fingerprint("test")
    victim = root / build_index(parse(name)).splits["test"][0][0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert build_index(parse(name)).fingerprint("test") != before


# -- a chapter through papermill: the page's worked example -------------------------------------------------
def test_the_worked_example_runs_two_chapters_on_user_folders(tmp_path):
    """The command on the page "Your own data", run as written: source = a flat tree that capt splits,
    target = a train/val/test tree; the split file, the result keys and the rows are checked."""
    data, out = tmp_path / "data", tmp_path / "out"
    shapes = write_tree(data / "shapes", "flat", per_class=6)
    photos = write_tree(data / "photos", "subtrees", per_class=4)
    (photos / "classnames.txt").write_text("circle red circle\n")
    sketches = write_tree(data / "sketches", "flat", per_class=3, classes={"circle": "circle", "star": "star"})
    text = PAGE.read_text()
    block = text[text.index(BEGIN):text.index(END)]
    command = block[block.index("```bash\n") + 8:block.rindex("```")]
    out.mkdir()
    env = {**_env(), "DATA": str(data), "OUT": str(out),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run(["bash", "-ec", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_csv(out / "results" / "results.csv")
    source, target, shift = f"folder:{shapes}", f"folder:{photos}", f"folder:{sketches}?shift_of=folder:{shapes}"
    assert set(rows["dataset"]) == {source, target, shift}
    assert dict(zip(rows["dataset"], rows["role"]))[shift] == "shift"
    assert set(rows["method"]) == {"zeroshot", "apt"}
    assert (out / "results" / "tables" / "cross_dataset.csv").is_file()
    # the split files of the folders, in CoOp's format, under the run's outputs; the folders untouched
    splits = sorted((out / "results" / "splits").glob("folder-*.json"))
    assert [p.name.split("-")[1] for p in splits] == ["photos", "shapes", "sketches"]
    assert list(json.loads(splits[2].read_text())) == ["test"]  # a shift is test-only
    coop = json.loads(next(p for p in splits if "shapes" in p.name).read_text())
    assert set(coop) == {"train", "val", "test"} and all(len(coop[s]) for s in ("train", "test"))
    assert not any(p.suffix == ".json" for p in shapes.rglob("*"))
    # the run keys: trained on the source's content (its fingerprint is in the trained run's key)
    s = Settings.from_profile("ci", "04_cross_dataset", source=source, targets=[target], methods=["zeroshot", "apt"],
                              shots=[1], out_dir=str(out / "results"))
    keys = {r.method: r.key for r in plans.runs(s)}
    assert set(rows["run_key"]) == set(keys.values())
    write_image(shapes / "square" / "img_extra", "square", (40, 60, 220), 1)
    assert {r.method: r.key for r in plans.runs(s)}["apt"] != keys["apt"]  # an edited source: a new training run


def test_capt_sweep_and_run_take_a_folder_through_set(tmp_path):
    """``--set`` values are YAML: a folder name goes through as it is, into the sweep's runs and keys."""
    shapes = write_tree(tmp_path / "shapes", "flat", per_class=4)
    capt_cli = str(Path(sys.executable).parent / "capt")
    done = subprocess.run([capt_cli, "sweep", "ci", "--only", "04_cross_dataset", "--dry-run", "--set",
                           f"source=folder:{shapes}", "shots=[1]", "methods=[zeroshot, apt]"], cwd=tmp_path,
                          env={**_env(), "CAPT_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 runs (1 trained)" in done.stdout
    from capt.sweep import expand

    tasks = expand("ci", ["04_cross_dataset"], {"source": f"folder:{shapes}", "shots": [1], "methods": ["apt"]})
    assert {t.run.source.name for t in tasks} == {f"folder:{shapes}"}


# -- damage found mid-run ---------------------------------------------------------------------------------
def test_a_damaged_image_found_mid_run_names_the_file_and_keeps_what_was_stored(tmp_path):
    good = write_tree(tmp_path / "good", "subtrees", per_class=2)
    bad = write_tree(tmp_path / "bad", "subtrees", per_class=2)
    jpg = next(p for p in sorted((bad / "test").rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg"))
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])  # its header reads; its pixels do not
    folder_index(f"folder:{bad}")  # the check before the run passes: the header is sound
    exp = Experiment(tmp_path / "out", device="cpu", progress=False)
    run = RunSpec(method="zeroshot", source=f"folder:{good}", **MINI_RUN)
    named = r"cannot read image " + re.escape(str(jpg)) + r" .*replace it with a good copy.*stored so far are kept"
    with pytest.raises(capt.data.UnreadableImageError, match=named):
        exp.evaluate(run, [f"folder:{good}", f"folder:{bad}"], ["clean"])
    stored = exp.store.read()
    assert set(stored["dataset"]) == {f"folder:{good}"} and len(stored) == 1


# -- few classes everywhere -------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 3])
def test_every_strong_attack_runs_with_fewer_than_four_classes(n_classes):
    from capt.attacks import AttackSpec, make_attack

    ds = load_dataset("mini_shape", "test")
    keep = [i for i, y in enumerate(ds.labels) if y < n_classes][:6]
    model = capt.PromptedCLIP(capt.load_clip("mini"), ds.classnames[:n_classes], prompt="none")
    x = torch.stack([ds[i][0] for i in keep])
    y = torch.tensor([ds.labels[i] for i in keep])
    for spec in (AttackSpec("aa", eps=4 / 255, steps=3), AttackSpec("apgdt", eps=4 / 255, steps=3),
                 AttackSpec("autoattack", eps=4 / 255, steps=3, options={"n_queries": 5})):
        adv = make_attack(spec, model)(x, y)
        assert adv.shape == x.shape and float((adv - x).abs().max()) <= 4 / 255 + 1e-6, spec.name


def test_apgdt_attacks_min_9_and_c_minus_1_targets():
    import torchattacks

    from capt.attacks import AttackSpec, make_attack

    seen = []
    original = torchattacks.APGDT.forward

    def spy(self, images, labels):
        seen.append(self.n_target_classes)
        return original(self, images, labels)

    ds = load_dataset("mini_shape", "test")
    for c in (2, 5):
        model = capt.PromptedCLIP(capt.load_clip("mini"), ds.classnames[:c], prompt="none")
        atk = make_attack(AttackSpec("apgdt", eps=1 / 255, steps=1), model)
        torchattacks.APGDT.forward = spy
        try:
            atk(torch.rand(1, 3, 32, 32), torch.tensor([0]))
        finally:
            torchattacks.APGDT.forward = original
    assert seen == [1, 4]


# -- APT's protocol as a profile ----------------------------------------------------------------------------
def test_the_apt_profiles_dry_run(tmp_path):
    """``capt sweep apt --dry-run`` expands APT's protocol without its weights file or data present."""
    s = Settings.from_profile("apt", "04_cross_dataset")
    assert (s.model, s.train_eps, s.eval_eps, s.pgd_steps) == ("ViT-B-32-quickgelu", 4 / 255, 4 / 255, 100)
    assert s.pgd().alpha is None  # the PGD step is eps/4 (capt.attacks' default for PGD)
    assert Path(s.weights).is_absolute() and s.weights.endswith("weights/apt_robust_vit_b32.pt")
    assert {r.pretrained for r in plans.runs(s)} == {s.weights}
    assert Settings.from_profile("apt_eps1").eval_eps == 1 / 255
    for profile in ("apt", "apt_eps1"):
        done = subprocess.run([str(Path(sys.executable).parent / "capt"), "sweep", profile, "--dry-run"], cwd=tmp_path,
                              env={**_env(), "CAPT_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        # what the reproducibility appendix quotes, as the command prints it
        lines = done.stdout.strip().splitlines()
        assert lines[-2] == "1169 runs (1168 trained), 7831 result rows; 0 complete in the store, 1169 to run"
        page = (REPO / "book" / "reproducibility.md").read_text()
        row = next(line for line in page.splitlines() if line.startswith("| `apt` and `apt_eps1` profiles"))
        assert f"`{lines[-2].split(';')[0]}`" in row and f"`{lines[-1]}`" in row
