"""The procedural mini world and its registered datasets."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from capt.data import dataset_names, get_spec, load_dataset
from capt.data import miniworld as mw


def test_regeneration_is_byte_identical_and_seed_dependent():
    a, ya, _ = mw.generate("mini_shape", "val")
    b, yb, _ = mw.generate("mini_shape", "val")
    assert a.dtype == np.uint8 and a.shape == (6 * 14, 3, 32, 32)
    assert a.tobytes() == b.tobytes() and np.array_equal(ya, yb)
    c, yc, _ = mw.generate("mini_shape", "val", seed=12345)
    assert np.array_equal(ya, yc)  # same balanced labels ...
    assert (a != c).mean() > 0.5  # ... but other images


def test_rendering_in_chunks_is_seeded_per_chunk():
    """A split larger than one chunk is the concatenation of independently seeded chunks: the
    first chunk of a large split equals the same objects rendered alone."""
    attrs = mw.generate("mini_source", "test")[2]
    n = mw._CHUNK
    whole = mw.render(attrs, 5)
    head = mw.render({k: v[:n] for k, v in attrs.items()}, 5)
    assert whole.shape[0] > n and whole[:n].tobytes() == head.tobytes()
    assert whole[n:2 * n].tobytes() != head.tobytes()


def test_pretrain_batch_is_deterministic_and_shows_every_shape():
    i1, t1, m1, a1 = mw.pretrain_batch(3, 512)
    i2, t2, m2, _ = mw.pretrain_batch(3, 512)
    assert i1.tobytes() == i2.tobytes() and t1 == t2 and np.array_equal(m1, m2)
    assert set(a1["shape"].tolist()) == set(range(len(mw.SHAPES)))  # the targets' extra shapes too
    assert set(a1["fill"].tolist()) == set(range(len(mw.FILLS)))
    assert m1.diagonal().all()  # every image fits its own caption
    assert m1.sum(1).mean() > 1.5  # and usually other captions too (multi-positive)
    assert (a1["colour"] == mw.GREY).any() and (a1["style"] == 1).any()


def test_splits_differ():
    tr, _, _ = mw._cached("mini_colour", "train")
    te, _, _ = mw._cached("mini_colour", "test")
    assert tr[:50].tobytes() != te[:50].tobytes()


def test_registry_roles_and_shifts():
    mini = set(dataset_names(kind="mini"))
    assert dataset_names(kind="mini", role="source") == ["mini_source"]
    targets = dataset_names(kind="mini", role="target")
    assert 6 <= len(targets) <= 8 and {"mini_shape", "mini_colour", "mini_size_shape"} <= set(targets)
    assert "mini_heldout" not in mini
    shifts = {"mini_source_v2", "mini_source_sketch", "mini_source_a", "mini_source_r"}
    assert shifts <= mini and set(dataset_names(kind="mini", role="shift")) == shifts
    for name in shifts:
        spec = get_spec(name)
        assert spec.shift_of == "mini_source" and spec.splits == ("test",)
        with pytest.raises(ValueError, match="no split"):
            load_dataset(name, "train")


def test_dataset_contents_and_sizes():
    src = load_dataset("mini_source", "test")
    assert src.num_classes == 100 and len(src) == 2000
    x, y = src[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert src.classnames[y].split() == [mw.COLOURS[y // 10], mw.SOURCE_SHAPES[y % 10]]
    assert np.bincount(src.labels).tolist() == [20] * 100
    train = load_dataset("mini_source", "train")
    assert np.bincount(train.labels).tolist() == [200] * 100  # seeds' 16-shot sets barely overlap
    for name in dataset_names(kind="mini"):
        ds = load_dataset(name, "test")
        role = get_spec(name).role
        low, high = {"source": (2000, 2000), "shift": (500, 500), "target": (300, 500)}[role]
        assert low <= len(ds) <= high, name
        assert "{}" in ds.templates[0]
        assert len(set(ds.keys)) == len(ds)
        if role == "target":
            assert min(np.bincount(load_dataset(name, "train").labels)) >= 16, name  # 16-shot possible


def test_targets_have_new_label_spaces_and_their_own_templates():
    source = set(mw.TASKS["mini_source"].classnames)
    templates = set()
    for name in dataset_names(kind="mini", role="target"):
        t = mw.TASKS[name]
        assert not set(t.classnames) & source, name
        assert t.templates[0] != mw.TASKS["mini_source"].templates[0], name
        templates.add(t.templates[0])
    assert len(templates) == len(dataset_names(kind="mini", role="target"))


def test_labels_match_attributes():
    attrs = mw.task_attributes("mini_fill_shape", "test")
    ds = load_dataset("mini_fill_shape", "test")
    for i in range(0, len(ds), 37):
        fill, shape = ds.classnames[ds.labels[i]].split()
        assert mw.FILLS[attrs["fill"][i]] == fill and mw.SHAPES[attrs["shape"][i]] == shape
    src = mw.task_attributes("mini_source", "train")
    assert src["shape"].max() < len(mw.SOURCE_SHAPES)
    pos = mw.task_attributes("mini_position", "test")
    assert (pos["size"] == 0).all() and (pos["position"] > 0).all()
    sketch = mw.task_attributes("mini_source_sketch", "test")
    assert (sketch["style"] == 1).all() and (sketch["fill"] == 1).all()


def test_every_word_is_in_the_vocabulary():
    from capt.mini_model import MiniTokenizer

    tok = MiniTokenizer()
    for t in mw.TASKS.values():
        for c in t.classnames:
            assert tok.unk_id not in tok.encode(t.templates[0].format(c)), c
    _, texts, _, _ = mw.pretrain_batch(0, 256)
    for text in texts:
        assert tok.unk_id not in tok.encode(text), text
        assert len(tok.encode(text)) + 2 <= tok.context_length


def test_rendered_splits_are_kept_on_disk_and_a_bad_file_is_made_again(tmp_path, monkeypatch):
    from capt.data import disk_cache, miniworld

    monkeypatch.setenv("CAPT_HOME", str(tmp_path))
    monkeypatch.delenv("CAPT_NO_DISK_CACHE", raising=False)
    calls = []

    def make():
        calls.append(1)
        images, labels, attrs = miniworld.generate("mini_shape", "test")
        return {"images": images, "labels": labels, "attr_shape": attrs["shape"]}

    first = disk_cache.cached_arrays("t/shape", make)
    path = tmp_path / "outputs" / ".cache" / "t" / "shape.npz"
    assert path.exists() and calls == [1]
    again = disk_cache.cached_arrays("t/shape", make)
    assert calls == [1] and all(np.array_equal(first[k], again[k]) for k in first)
    path.write_bytes(path.read_bytes()[:100])  # truncated (a killed writer never leaves this: os.replace)
    fixed = disk_cache.cached_arrays("t/shape", make)
    assert calls == [1, 1] and np.array_equal(fixed["images"], first["images"])
    assert not list(path.parent.glob(".shape*"))  # no temporary file left behind
    monkeypatch.setenv("CAPT_NO_DISK_CACHE", "1")
    disk_cache.cached_arrays("t/other", make)
    assert not (path.parent / "other.npz").exists()
    # the key names the generator's code: another source gives another file
    other = tmp_path / "gen.py"
    other.write_text("# a changed renderer\n")
    assert disk_cache.source_sha(miniworld.__file__) != disk_cache.source_sha(other)


def test_the_faint_cue_is_keyed_by_colour_and_shape_and_bounded_by_its_amplitude():
    """Look.cue_amplitude adds the world's non-robust feature: a fixed +-1 pattern per colour and per shape,
    half the amplitude each, so every pixel moves by 0 or +-amplitude; with full agreement the pattern is the
    object's own, and the cue is off (no random draws, identical images) at amplitude 0."""
    attrs = mw.sample_attributes(np.random.default_rng(0), 64, grey_frac=0.2)
    look = replace(mw.Look(), noise=0.0)
    base = mw.render(attrs, 3, look)
    assert base.tobytes() == mw.render(attrs, 3, replace(look, cue_amplitude=0.0)).tobytes()
    rng = np.random.default_rng(1)
    cue = mw._cue(rng, attrs, replace(look, cue_amplitude=4.0, cue_agreement=1.0), 64)
    colours, shapes = mw._cue_patterns(mw.IMAGE_SIZE)
    col = np.where(attrs["colour"] == mw.GREY, len(mw.COLOURS), attrs["colour"])
    assert np.array_equal(cue, 2.0 * (colours[col] + shapes[attrs["shape"]]))
    assert set(np.unique(cue).tolist()) == {-4.0, 0.0, 4.0}
    # with agreement 0.5 about half the keys are the object's own (the rest uniform, some equal by chance)
    half = mw._cue(np.random.default_rng(2), attrs, replace(look, cue_amplitude=4.0, cue_agreement=0.5), 64)
    own = np.array([np.array_equal(half[i], cue[i]) for i in range(64)])
    assert 0.1 < own.mean() < 0.7


def test_a_finer_resolution_samples_the_same_scene():
    """set_image_size samples the scene (every length in SCENE units) more finely: with the draws that depend on
    the pixel count switched off (no sensor noise, plain backgrounds, no clutter), the 64 x 64 image pooled
    2 x 2 is the 32 x 32 image up to anti-aliasing at the edges; every mode renders at the new size, the
    splits rendered before are not served at the new size, and a size off the scene's grid is refused."""
    rng = np.random.default_rng(0)
    attrs = mw.sample_attributes(rng, 64, fixed={"background": np.zeros(64, dtype=np.int64)})
    look = mw.Look(noise=0.0, clutter_frac=0.0, cue_amplitude=2.0)
    small = mw.render(attrs, 7, replace(look, cue_amplitude=0.0)).astype(np.float32)
    mw.render(attrs, 7, look)  # the cue's patterns at 32 x 32 are cached before the size changes
    before = mw.content_hash("mini_shape", "val")
    with pytest.raises(ValueError, match="image size 48 must be a multiple of the world's scene size 32"):
        mw.set_image_size(48)
    try:
        mw.set_image_size(64)
        fine = mw.render(attrs, 7, replace(look, cue_amplitude=0.0)).astype(np.float32)
        assert fine.shape == (64, 3, 64, 64)
        pooled = fine.reshape(64, 3, 32, 2, 32, 2).mean((3, 5))
        diff = np.abs(pooled - small)
        assert diff.mean() < 1.0 and np.percentile(diff, 99) < 20  # edges move by under a pixel, nothing else
        assert np.abs(fine - np.repeat(np.repeat(small, 2, 2), 2, 3)).mean() > diff.mean()  # finer, not upsampled
        for task in ("mini_source_sketch", "mini_source_a", "mini_source_r", "mini_background"):
            assert mw.generate(task, "test")[0].shape[1:] == (3, 64, 64)
        assert mw.render(attrs, 7, look).shape == (64, 3, 64, 64)
        assert mw.build("mini_shape", "val").images.shape[-1] == 64
        assert mw.content_hash("mini_shape", "val") != before
    finally:
        mw.set_image_size(mw.SCENE)
    assert mw.content_hash("mini_shape", "val") == before
