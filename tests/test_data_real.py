"""The real datasets: registry entries, CoOp layouts in miniature, and the promised error messages."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from capt.data import UnreadableImageError, dataset_names, get_spec, load_dataset
from capt.data.real import (
    IMAGENET_VAL_PER_CLASS,
    REAL_DATASETS,
    DatasetNotReady,
    MissingImagesError,
    default_data_root,
)
from capt.data.status import dataset_status
from fixtures_data import (
    EUROSAT_CLASSES,
    IMAGENET_CLASSES,
    make_aircraft,
    make_eurosat,
    make_imagenet,
    make_pets,
    make_shift,
    make_split_dataset,
    write_image,
)

NAMES = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
         "sun397", "dtd", "eurosat", "ucf101", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
SHIFTS = ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]


# -- registry ------------------------------------------------------------------------------------
def test_registry_has_the_fifteen_real_datasets():
    assert dataset_names(kind="real") == NAMES
    assert dataset_names(kind="real", role="source") == ["imagenet"]
    assert dataset_names(kind="real", role="shift") == SHIFTS
    for name in SHIFTS:
        spec = get_spec(name)
        assert spec.shift_of == "imagenet" and spec.splits == ("test",)
        assert spec.templates == ("a photo of a {}.",)
    for name in NAMES[1:11]:
        assert get_spec(name).role == "target" and get_spec(name).splits == ("train", "val", "test")


@pytest.mark.parametrize("name, template", [
    ("oxford_pets", "a photo of a {}, a type of pet."),
    ("oxford_flowers", "a photo of a {}, a type of flower."),
    ("fgvc_aircraft", "a photo of a {}, a type of aircraft."),
    ("dtd", "{} texture."),
    ("eurosat", "a centered satellite photo of {}."),
    ("stanford_cars", "a photo of a {}."),
    ("food101", "a photo of {}, a type of food."),
    ("sun397", "a photo of a {}."),
    ("caltech101", "a photo of a {}."),
    ("ucf101", "a photo of a person doing {}."),
    ("imagenet", "a photo of a {}."),
])
def test_coop_templates(name, template):
    assert get_spec(name).templates == (template,)


def test_layout_folders_follow_coop():
    folders = {n: (REAL_DATASETS[n].folder, REAL_DATASETS[n].image_dir) for n in NAMES}
    assert folders["caltech101"] == ("caltech-101", "101_ObjectCategories")
    assert folders["food101"] == ("food-101", "images")
    assert folders["stanford_cars"] == ("stanford_cars", "")
    assert folders["imagenet_a"] == ("imagenet-adversarial", "imagenet-a")
    assert folders["imagenet_r"] == ("imagenet-rendition", "imagenet-r")
    assert folders["imagenet_v2"] == ("imagenetv2", "imagenetv2-matched-frequency-format-val")
    assert REAL_DATASETS["dtd"].split_file == "split_zhou_DescribableTextures.json"


def test_unknown_dataset_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet1k'.*valid choices:.*imagenet_sketch"):
        load_dataset("imagenet1k", "test", tmp_path)
    with pytest.raises(ValueError, match="no split 'train'; valid choices: test"):
        load_dataset("imagenet_a", "train", tmp_path)


# -- ImageNet --------------------------------------------------------------------------------------
def test_imagenet_layout(tmp_path):
    make_imagenet(tmp_path, train_per_class=5, val_per_class=2)
    train = load_dataset("imagenet", "train", tmp_path)
    val = load_dataset("imagenet", "val", tmp_path)
    test = load_dataset("imagenet", "test", tmp_path)
    held = min(IMAGENET_VAL_PER_CLASS, 5 // 2)
    assert (len(train), len(val), len(test)) == (4 * (5 - held), 4 * held, 8)
    assert train.classnames == [n for _, n in IMAGENET_CLASSES]
    assert train.templates == ["a photo of a {}."]
    assert sorted(set(test.labels)) == [0, 1, 2, 3]
    assert set(train.keys).isdisjoint(val.keys)                       # held out, not shared
    assert all(k.startswith("train/n") for k in train.keys + val.keys)
    assert all(k.startswith("val/n") for k in test.keys)
    for ds in (train, test):                                          # label = line of classnames.txt
        for key, label in zip(ds.keys, ds.labels):
            assert key.split("/")[1] == IMAGENET_CLASSES[label][0]
    image, label = test[0]
    assert image.dtype == torch.float32 and image.shape == (3, 5, 6)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and label == 0
    assert train.split == "train" and train.source_classes is None
    # the held-out choice is a pure function of the keys
    assert load_dataset("imagenet", "val", tmp_path).keys == val.keys


def test_imagenet_folder_not_in_classnames(tmp_path):
    make_imagenet(tmp_path)
    write_image(tmp_path / "imagenet" / "images" / "train" / "n99999999" / "x.JPEG")
    with pytest.raises(DatasetNotReady, match="n99999999 is not a class of classnames.txt"):
        load_dataset("imagenet", "train", tmp_path)


def test_imagenet_without_classnames(tmp_path):
    make_imagenet(tmp_path)
    (tmp_path / "imagenet" / "classnames.txt").unlink()
    with pytest.raises(DatasetNotReady) as err:
        load_dataset("imagenet", "test", tmp_path)
    assert "classnames.txt" in str(err.value)
    assert f"python data_scripts/prepare_data.py imagenet --root {tmp_path}" in str(err.value)


# -- the shifts ------------------------------------------------------------------------------------
def test_imagenet_a_is_the_subset_on_disk(tmp_path):
    make_imagenet(tmp_path)
    make_shift(tmp_path, "imagenet_a", wnids=["n01443537", "n01491361"], per_class=3)
    ds = load_dataset("imagenet_a", "test", tmp_path)
    assert ds.classnames == ["goldfish", "tiger shark"]
    assert ds.source_classes == [1, 3]                     # ImageNet labels of the subset
    assert ds.labels == [0, 0, 0, 1, 1, 1]
    assert ds.keys[0] == "n01443537/0.jpg"                 # README.txt beside the folders is ignored
    assert ds.templates == ["a photo of a {}."]
    assert get_spec("imagenet_a").shift_of == "imagenet"


def test_imagenet_r_with_its_own_classnames_copy(tmp_path):
    make_shift(tmp_path, "imagenet_r", wnids=["n01440764", "n01484850"], own_classnames=True)
    ds = load_dataset("imagenet_r", "test", tmp_path)        # no imagenet/ folder needed
    assert ds.classnames == ["tench", "great white shark"] and ds.source_classes == [0, 2]


def test_imagenet_v2_and_sketch_use_imagenet_labels(tmp_path):
    make_imagenet(tmp_path)
    make_shift(tmp_path, "imagenet_v2", per_class=2)
    make_shift(tmp_path, "imagenet_sketch", wnids=["n01440764", "n01491361"], per_class=2)
    v2 = load_dataset("imagenet_v2", "test", tmp_path)
    assert v2.num_classes == 4 and v2.labels == [0, 0, 1, 1, 2, 2, 3, 3] and v2.keys[2] == "1/0.jpg"
    sketch = load_dataset("imagenet_sketch", "test", tmp_path)
    assert sketch.num_classes == 4 and sketch.labels == [0, 0, 3, 3]
    assert sketch.classnames == load_dataset("imagenet", "test", tmp_path).classnames


def test_shift_without_any_classnames(tmp_path):
    make_shift(tmp_path, "imagenet_a", wnids=["n01443537"])
    with pytest.raises(DatasetNotReady) as err:
        load_dataset("imagenet_a", "test", tmp_path)
    msg = str(err.value)
    assert "classnames.txt" in msg and str(tmp_path / "imagenet" / "classnames.txt") in msg
    assert "prepare_data.py imagenet --root" in msg


def test_shift_folder_that_is_not_a_wnid(tmp_path):
    make_imagenet(tmp_path)
    make_shift(tmp_path, "imagenet_r", wnids=["n01443537"])
    write_image(tmp_path / "imagenet-rendition" / "imagenet-r" / "n00000001" / "a.jpg")
    with pytest.raises(DatasetNotReady, match="not ImageNet WordNet ids"):
        load_dataset("imagenet_r", "test", tmp_path)


# -- split-file datasets ---------------------------------------------------------------------------
def test_eurosat_split_file(tmp_path):
    split = make_eurosat(tmp_path, counts=(3, 2, 2))
    for part, n in (("train", 9), ("val", 6), ("test", 6)):
        ds = load_dataset("eurosat", part, tmp_path)
        assert len(ds) == n
        assert ds.keys == [e[0] for e in split[part]] and ds.labels == [e[1] for e in split[part]]
        assert ds.classnames == EUROSAT_CLASSES
        assert ds.templates == ["a centered satellite photo of {}."]
    assert ds.root == tmp_path / "eurosat" / "2750"


def test_pets_underscores_become_spaces(tmp_path):
    make_pets(tmp_path, counts=(4, 1, 2))
    ds = load_dataset("oxford_pets", "train", tmp_path)
    assert ds.classnames == ["abyssinian", "american bulldog", "basset hound"]
    assert len(ds) == 12 and ds.keys[0] == "Abyssinian_train0.jpg"
    x, y = ds[5]
    assert x.shape == (3, 5, 6) and y == 1


def test_stanford_cars_paths_are_relative_to_its_folder(tmp_path):
    make_split_dataset(tmp_path, "stanford_cars", "", "split_zhou_StanfordCars.json",
                       ["2012 Tesla Model S", "2012 BMW M3 coupe"], counts=(1, 1, 1),
                       path_of=lambda c, s, i: f"cars_{'test' if s == 'test' else 'train'}/{c[-5:]}_{s}{i}.jpg")
    ds = load_dataset("stanford_cars", "test", tmp_path)
    assert ds.keys[0].startswith("cars_test/") and ds.classnames[1] == "2012 BMW M3 coupe"


def test_fgvc_aircraft_variant_files(tmp_path):
    make_aircraft(tmp_path)
    train = load_dataset("fgvc_aircraft", "train", tmp_path)
    assert train.classnames == ["707-320", "A300B4", "Cessna 172"]
    assert train.labels == [0, 0, 1, 1, 2, 2] and train.keys[0] == "1000001.jpg"
    assert len(load_dataset("fgvc_aircraft", "test", tmp_path)) == 3
    assert train.templates == ["a photo of a {}, a type of aircraft."]


# -- what goes wrong, and what the user is told ------------------------------------------------------
def test_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotReady) as err:
        load_dataset("eurosat", "train", root)
    msg = str(err.value)
    assert "'eurosat'" in msg and "data root does not exist" in msg and str(root) in msg
    assert f"python data_scripts/prepare_data.py eurosat --root {root}" in msg
    assert isinstance(err.value, FileNotFoundError)
    assert err.value.dataset == "eurosat" and err.value.command.endswith(f"--root {root}")


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetNotReady, match=r"folder 'food-101' is missing.*prepare_data.py food101 --root"):
        load_dataset("food101", "test", tmp_path)


def test_missing_split_file(tmp_path):
    make_eurosat(tmp_path)
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").unlink()
    with pytest.raises(DatasetNotReady) as err:
        load_dataset("eurosat", "test", tmp_path)
    msg = str(err.value)
    assert "split file split_zhou_EuroSAT.json is missing" in msg
    assert str(tmp_path / "eurosat" / "split_zhou_EuroSAT.json") in msg
    assert "prepare_data.py eurosat" in msg


def test_split_pointing_at_missing_images(tmp_path):
    make_eurosat(tmp_path)
    gone = sorted((tmp_path / "eurosat" / "2750" / "Forest").glob("*_test*.jpg"))
    for path in gone:
        path.unlink()
    with pytest.raises(MissingImagesError) as err:
        load_dataset("eurosat", "test", tmp_path)
    msg = str(err.value)
    assert f"{len(gone)} of 6 images" in msg and str(gone[0]) in msg
    assert "prepare_data.py eurosat" in msg
    assert err.value.missing[0] == str(gone[0])
    assert len(load_dataset("eurosat", "train", tmp_path)) == 9      # the other splits still load


def test_invalid_split_file(tmp_path):
    make_eurosat(tmp_path)
    path = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    path.write_text(json.dumps({"train": [["a.jpg", "zero", "x"]]}))
    with pytest.raises(DatasetNotReady, match=r"unusable.*train\[0\]"):
        load_dataset("eurosat", "train", tmp_path)
    path.write_text("{not json")
    with pytest.raises(DatasetNotReady, match="not valid JSON"):
        load_dataset("eurosat", "train", tmp_path)


def test_corrupt_image_through_the_loader(tmp_path):
    make_eurosat(tmp_path)
    ds = load_dataset("eurosat", "train", tmp_path)
    bad = ds.root / ds.keys[1]
    bad.write_bytes(b"this is not a JPEG")
    with pytest.raises(UnreadableImageError, match=str(bad).replace("\\", "\\\\")):
        ds[1]
    ds.skip_unreadable = True
    x, y = ds[1]
    assert x.shape == (3, 5, 6) and y == 0 and ds.skipped == [str(bad)]


def test_error_survives_pickling(tmp_path):
    with pytest.raises(DatasetNotReady) as err:
        load_dataset("dtd", "test", tmp_path)
    again = pickle.loads(pickle.dumps(err.value))
    assert str(again) == str(err.value) and again.command == err.value.command


# -- status --------------------------------------------------------------------------------------
def test_status_missing_partial_ready(tmp_path):
    make_eurosat(tmp_path)
    make_pets(tmp_path)
    (tmp_path / "oxford_pets" / "images" / "Abyssinian_test0.jpg").unlink()
    assert dataset_status("dtd", tmp_path)["state"] == "missing"
    ready = dataset_status("eurosat", tmp_path)
    assert ready["state"] == "ready" and ready["counts"] == {"train": 9, "val": 6, "test": 6}
    assert ready["classes"] == 3 and ready["expected"]["test"] == 8100
    partial = dataset_status("oxford_pets", tmp_path)
    assert partial["state"] == "partial" and partial["counts"] == {"train": 12, "val": 3}
    assert "test:" in partial["detail"] and "Abyssinian_test0.jpg" in partial["detail"]
    with pytest.raises(ValueError, match="valid choices"):
        dataset_status("nope", tmp_path)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPT_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    make_eurosat(tmp_path)
    assert len(load_dataset("eurosat", "val")) == 6             # root=None -> $CAPT_DATA
    monkeypatch.delenv("CAPT_DATA")
    assert str(default_data_root()) == "data"


# -- the command line ----------------------------------------------------------------------------
def test_cli_list(capsys):
    from capt.cli import main

    assert main(["data", "list", "--kind", "real"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "shift of imagenet" in out and "200 (subset on disk)" in out


def test_cli_status(tmp_path, capsys):
    from capt.data.cli import main

    make_eurosat(tmp_path)
    assert main(["status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("eurosat"))
    assert "ready" in line and "train=9 val=6 test=6" in line
    assert "missing" in next(l for l in out.splitlines() if l.startswith("dtd"))
    assert main(["status", "eurosat", "--root", str(tmp_path), "--strict"]) == 0
    assert main(["status", "dtd", "--root", str(tmp_path), "--strict"]) == 1
    assert main(["status", "nope", "--root", str(tmp_path)]) == 2
    assert "valid choices" in capsys.readouterr().err


def test_cli_prepare_unknown_dataset(tmp_path, capsys):
    from capt.data.cli import main

    assert main(["prepare", "imagenet1k", "--root", str(tmp_path)]) == 2
    assert "unknown real dataset 'imagenet1k'; valid choices:" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
