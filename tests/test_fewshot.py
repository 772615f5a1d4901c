"""Few-shot sampling (exact, deterministic, cached, audited) and the base-to-new class split."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from capt.data import TensorImages, load_dataset
from capt.data.fewshot import (
    PROTOCOL_SHOTS,
    base_new_split,
    cache_path,
    few_shot_keys,
    sample_few_shot,
    validate_shots,
)
from fixtures_data import make_eurosat


def toy(per_class=(6, 6, 6, 6, 6), name="toy"):
    labels = [c for c, n in enumerate(per_class) for _ in range(n)]
    keys = [f"class{c}/img{i:02d}.jpg" for c, n in enumerate(per_class) for i in range(n)]
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
    return TensorImages(name, images, labels, [f"c{c}" for c in range(len(per_class))], keys=keys)


# Changing the sampling algorithm must fail this test: these keys are part of the protocol.
GOLDEN_2_SHOT_SEED_1 = [
    "class0/img00.jpg", "class0/img05.jpg", "class1/img02.jpg", "class1/img03.jpg", "class2/img01.jpg",
    "class2/img05.jpg", "class3/img04.jpg", "class3/img05.jpg", "class4/img01.jpg", "class4/img02.jpg",
]


def test_golden_keys():
    assert sample_few_shot(toy(), 2, seed=1).keys == GOLDEN_2_SHOT_SEED_1


def test_golden_keys_follow_the_documented_rule():
    ds = toy()
    expected = []
    for c in range(5):
        members = [k for k, y in zip(ds.keys, ds.labels) if y == c]
        expected += sorted(sorted(members, key=lambda k: hashlib.sha256(f"1:{k}".encode()).hexdigest())[:2])
    assert expected == GOLDEN_2_SHOT_SEED_1


@pytest.mark.parametrize("shots", PROTOCOL_SHOTS)
def test_exactly_k_per_class(shots):
    ds = toy(per_class=(20, 17, 16, 30))
    few = sample_few_shot(ds, shots, seed=3)
    assert Counter(few.labels) == {c: shots for c in range(4)}
    assert len(set(few.keys)) == len(few)
    assert set(few.keys) <= set(ds.keys)
    # the view returns the images and labels of the chosen items
    x, y = few[0]
    assert x.shape == (3, 2, 2) and y == few.labels[0]


def test_same_seed_same_keys_other_seed_other_keys():
    ds = toy(per_class=(30,) * 6)
    a = sample_few_shot(ds, 4, seed=1).keys
    assert sample_few_shot(toy(per_class=(30,) * 6), 4, seed=1).keys == a
    assert sample_few_shot(ds, 4, seed=2).keys != a
    assert sample_few_shot(ds, 4, seed=3).keys != a


def test_independent_of_item_order():
    ds = toy(per_class=(10, 10, 10))
    shuffled = ds.subset(list(reversed(range(len(ds)))))
    assert set(sample_few_shot(shuffled, 4, 7).keys) == set(sample_few_shot(ds, 4, 7).keys)


def test_same_keys_in_a_fresh_interpreter():
    """No reliance on hash randomisation: another process with another PYTHONHASHSEED agrees."""
    code = ("import torch, sys; sys.path.insert(0, 'tests'); from test_fewshot import toy; "
            "from capt.data.fewshot import sample_few_shot; print(','.join(sample_few_shot(toy(), 2, 1).keys))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.stdout.strip().split(",") == GOLDEN_2_SHOT_SEED_1


def test_too_few_items_keeps_all_with_a_warning():
    ds = toy(per_class=(8, 3, 8))
    with pytest.warns(UserWarning, match=r"class 1 \('c1'\) has only 3 training images, fewer than shots=4"):
        few = sample_few_shot(ds, 4, seed=1)
    assert Counter(few.labels) == {0: 4, 1: 3, 2: 4}


def test_all_shots_keeps_everything():
    ds = toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        few = sample_few_shot(ds, "all", seed=1)
    assert few.keys == ds.keys


@pytest.mark.parametrize("bad", [0, -1, 2.5, "sixteen", "", None, True, [4]])
def test_bad_shots_name_the_valid_choices(bad):
    with pytest.raises(ValueError, match=r"valid choices: 1, 2, 4, 8, 16 \(any positive integer\) or 'all'"):
        sample_few_shot(toy(), bad, seed=1)


def test_shots_accepted_forms():
    assert validate_shots("16") == 16 and validate_shots(" ALL ") == "all" and validate_shots(3) == 3
    with pytest.raises(ValueError, match="seed"):
        sample_few_shot(toy(), 1, seed="one")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=6), st.integers(1, 8), st.integers(0, 10**6))
def test_property_min_k_per_class(per_class, shots, seed):
    ds = toy(per_class=tuple(per_class))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = few_shot_keys(ds, shots, seed)
    chosen = Counter(int(k.split("/")[0][5:]) for k in keys)
    assert all(chosen.get(c, 0) == min(shots, n) for c, n in enumerate(per_class))


# -- the cache ---------------------------------------------------------------------------------------
def test_cache_is_written_reused_and_audited(tmp_path):
    ds = toy()
    few = sample_few_shot(ds, 2, seed=1, cache_dir=tmp_path)
    path = cache_path(tmp_path, ds, 2, 1)
    assert path.name == "toy_shot2_seed1.json" and [p.name for p in tmp_path.iterdir()] == [path.name]
    data = json.loads(path.read_text())
    assert data["keys"] == few.keys == GOLDEN_2_SHOT_SEED_1
    assert data["labels"] == few.labels and data["shots"] == 2 and data["seed"] == 1
    assert data["algorithm"] == "sha256-rank/v1" and data["dataset"] == "toy" and data["source_items"] == 30
    # a hand-edited (but consistent) file is what is used: the file is the record of the run
    data["keys"], data["labels"] = data["keys"][:2], data["labels"][:2]
    path.write_text(json.dumps(data))
    assert sample_few_shot(ds, 2, seed=1, cache_dir=tmp_path).keys == GOLDEN_2_SHOT_SEED_1[:2]


def test_cache_that_does_not_match_is_an_error(tmp_path):
    sample_few_shot(toy(), 2, seed=1, cache_dir=tmp_path)
    other = toy(per_class=(6, 6, 6, 6, 7))              # same name, one more image
    with pytest.raises(ValueError, match="does not match dataset 'toy'.*source_items is 30, expected 31"):
        sample_few_shot(other, 2, seed=1, cache_dir=tmp_path)
    relabelled = toy()
    relabelled.classnames[0] = "renamed"
    with pytest.raises(ValueError, match="keys, labels or class names differ.*Delete it"):
        sample_few_shot(relabelled, 2, seed=1, cache_dir=tmp_path)
    path = cache_path(tmp_path, toy(), 2, 1)
    data = json.loads(path.read_text())
    data["seed"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="seed is 2, expected 1"):
        sample_few_shot(toy(), 2, seed=1, cache_dir=tmp_path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        sample_few_shot(toy(), 2, seed=1, cache_dir=tmp_path)


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    import os

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        sample_few_shot(toy(), 2, seed=1, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []                # no half-written file, no temp file


def test_few_shot_on_a_real_layout(tmp_path):
    make_eurosat(tmp_path, counts=(5, 1, 1))
    train = load_dataset("eurosat", "train", tmp_path)
    few = sample_few_shot(train, 2, seed=1, cache_dir=tmp_path / "splits")
    assert Counter(few.labels) == {0: 2, 1: 2, 2: 2}
    x, y = few[0]
    assert x.shape == (3, 5, 6)
    again = sample_few_shot(load_dataset("eurosat", "train", tmp_path), 2, seed=1, cache_dir=tmp_path / "splits")
    assert again.keys == few.keys


# -- base to new ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes, n_base", [(2, 1), (5, 3), (10, 5), (37, 19)])
def test_base_new_split(n_classes, n_base):
    ds = toy(per_class=(3,) * n_classes)
    base, new = base_new_split(ds)
    assert base.num_classes == n_base and new.num_classes == n_classes - n_base
    assert base.classnames == ds.classnames[:n_base] and new.classnames == ds.classnames[n_base:]
    assert set(base.keys).isdisjoint(new.keys) and set(base.keys) | set(new.keys) == set(ds.keys)
    assert sorted(set(base.labels)) == list(range(n_base))
    assert sorted(set(new.labels)) == list(range(n_classes - n_base))
    for key, label in zip(new.keys, new.labels):       # relabelled from 0, class by class
        assert int(key.split("/")[0][5:]) == label + n_base
    x, y = new[0]
    assert y == 0 and x.shape == (3, 2, 2)


def test_base_new_after_few_shot():
    few = sample_few_shot(toy(per_class=(6,) * 7), 2, seed=1)
    base, new = base_new_split(few)
    assert Counter(base.labels) == {c: 2 for c in range(4)} and Counter(new.labels) == {c: 2 for c in range(3)}


def test_base_new_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2"):
        base_new_split(toy(per_class=(3,)))
