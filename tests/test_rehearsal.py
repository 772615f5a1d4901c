"""Dress rehearsal of the ``paper`` profile: every chapter, through ``capt run paper``, on a miniature of
all fifteen datasets in CoOp's layout and a random-init ViT-B/32 loaded from a local weights file.

The profile file is used as it is; the overrides only shrink it or point it at this machine
(:data:`OVERRIDES`): the data root, the weights file, the output folder and the device; epochs,
shots and seeds; the test subsets (``max_n``, ``aa_n``); the attack steps (``train_steps``,
``pgd_steps``, ``aa_steps``, ``steps_list``) and radii (``eps_list``); the task trained on in the
in-distribution and base-to-new chapters (``datasets``: ImageNet, of eleven); the ablation groups
(``ablations``: one objective group and one prompt group of six). Chapter 01 evaluates all fifteen
datasets (zero-shot); chapters 02-07, which evaluate every trained method on every dataset they
name, run in a second ``capt run`` into the same store with two of the ten targets and two of the
four shifts (:data:`LATER`), one per remaining on-disk layout: every dataset's loader and class names
are exercised by chapter 01 already, and a method's prompts meet new class names the same way on any
target. At 2 cores a ViT-B/32 pass on one 224 px image takes about 0.05 s, so the run is a few
thousand passes: minutes. Model (ViT-B-32 at 224 px, QuickGELU), prompt depth 9, n_ctx 2, the methods
and the attacks are the profile's own.

Then every chapter ran without an error and shows its tables, the rows are in the results store, and
the book builds from those notebooks (Jupyter Book, in a scratch copy of the sources: seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from book_build import build_book
from fixtures_data import make_coop_root

ROOT = Path(__file__).resolve().parent.parent

OVERRIDES = {
    "epochs": 1, "shots": [1], "seeds": [1],
    "max_n": 1, "aa_n": 1,
    "train_steps": 1, "pgd_steps": 1, "aa_steps": 1, "steps_list": [1], "eps_list": ["1/255"],
    # in-distribution and base-to-new train a model per method on ImageNet (its folder layout); every one of
    # the fifteen datasets is still loaded and evaluated (chapter 01)
    "datasets": ["imagenet"],
    # one ablation group that changes the objective and one that changes the prompts (the others are the
    # same two code paths with other values): 5 of the 13 variant runs
    "ablations": ["alpha strategy", "prompt depth"],
}
# chapters 02-07 evaluate every trained method on these: FGVC-Aircraft's own files and a CoOp split file
# as targets, ImageNet-V2's numbered folders and ImageNet-A's subset of WordNet folders as shifts
LATER = {"targets": ["fgvc_aircraft", "eurosat"], "shifts": ["imagenet_v2", "imagenet_a"]}


def write_random_vit_b32(path: Path) -> Path:
    """A random-init ViT-B/32 (QuickGELU, as OpenAI's) saved as an open_clip state dict."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def test_weights_file_loads_through_the_openai_path_with_quick_gelu(tmp_path):
    from open_clip.transformer import QuickGELU

    import capt

    path = write_random_vit_b32(tmp_path / "openai" / "ViT-B-32.pt")  # a path naming openai, as open_clip's cache
    bundle = capt.load_clip("ViT-B-32", pretrained=str(path))
    acts = {type(m) for m in bundle.model.modules() if "GELU" in type(m).__name__}
    assert acts == {QuickGELU}
    assert bundle.image_size == 224 and bundle.model.visual.conv1.kernel_size == (32, 32)
    plain = capt.load_clip("ViT-B-32", pretrained=str(path), quick_gelu=False)
    assert QuickGELU not in {type(m) for m in plain.model.modules()}


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the suite's 600 s per test is for unit tests; see the module docstring for the cost
def test_paper_profile_dress_rehearsal(tmp_path):
    import nbformat

    from capt.data.real import REAL_DATASETS
    from capt.notebook import Settings
    from capt.profiles import load_profile, notebook_names
    from capt.results import ResultStore

    data = tmp_path / "data"
    make_coop_root(data)
    weights = write_random_vit_b32(tmp_path / "weights" / "openai-random" / "open_clip_pytorch_model.bin")
    out, notebooks = tmp_path / "out", tmp_path / "notebooks"
    sets = {**OVERRIDES, "data_root": str(data), "pretrained": str(weights), "out_dir": str(out), "device": "cpu"}
    chapters = notebook_names(load_profile("paper"))
    assert chapters == ["01_zeroshot_robustness", "02_in_distribution", "03_distribution_shift",
                        "04_cross_dataset", "05_base_to_new", "06_ablations", "07_attack_strength"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    log = tmp_path / "capt-run.log"  # followed live with `tail -f` while it runs
    runs = [(chapters[:1], sets), (chapters[1:], {**sets, **LATER})]  # (chapters, their overrides)
    for only, values in runs:
        cmd = [sys.executable, "-m", "capt.cli", "run", "paper", "--output-dir", str(notebooks),
               "--only", *only, "--set", *[f"{k}={v}" for k, v in values.items()]]
        with open(log, "a") as fh:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=3600)
        assert proc.returncode == 0, log.read_text()[-8000:]
    wall = time.perf_counter() - t0

    for name in chapters:
        nb = nbformat.read(notebooks / f"{name}.ipynb", as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'profile = "paper"' in injected[0].source  # the rest comes from the profile
        S = Settings.from_profile("paper", name, **next(values for only, values in runs if name in only))
        assert (S.model, S.depth) == ("ViT-B-32", 9)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], name
        tables = [o for o in outputs if "text/html" in o.get("data", {}) and "<table" in o["data"]["text/html"]]
        assert tables, f"{name} shows no table"

    rows = ResultStore(out).read()
    datasets = {d.partition("[")[0] for d in rows["dataset"].astype(str)}
    assert datasets == set(REAL_DATASETS)  # every one of the fifteen datasets was evaluated
    assert set(rows["method"]) >= set(Settings.from_profile("paper").methods)
    later = {"imagenet", *LATER["targets"], *LATER["shifts"]}
    for method, part in rows.groupby("method"):  # every trained method met the later chapters' datasets
        assert method == "zeroshot" or later <= set(part["dataset"].astype(str)), method

    # and the book builds from them: every chapter is a page that shows its tables
    html = build_book([notebooks / f"{name}.ipynb" for name in chapters], tmp_path / "book")
    for name in chapters:
        page = (html / "book" / "experiments" / f"{name}.html").read_text(encoding="utf-8")
        assert "<table" in page, f"{name}: the built page shows no table"
    print(f"\ndress rehearsal: {len(chapters)} chapters, {len(rows)} rows, {wall:.0f} s, then the book built")
