"""The mini tokenizer, the mini CLIP config and the committed checkpoint (tied to its report)."""

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F

import capt

from capt.data import load_dataset
from capt.mini_model import (DEFAULT_CHECKPOINT, DEFAULT_REPORT, EOT, MODEL_CONFIG, MiniCheckpointError,
                             MiniTokenizer, UnknownWordsError, build_mini, count_parameters, default_vocab,
                             load_mini)


@pytest.fixture(scope="module")
def mini():
    return load_mini()


@pytest.fixture(scope="module")
def report():
    return json.loads(DEFAULT_REPORT.read_text())


# -- tokenizer ---------------------------------------------------------------------------------
def test_vocab_is_deterministic_and_eot_is_highest():
    v = default_vocab()
    assert v == default_vocab()
    tok = MiniTokenizer()
    assert tok.vocab[-1] == EOT and tok.eot_id == len(tok.vocab) - 1 == max(tok.index.values())
    assert tok.pad_id == 0 and "X" in tok.vocab and "." in tok.vocab and "," in tok.vocab


def test_one_token_per_word_and_padding():
    tok = MiniTokenizer()
    for w in tok.vocab[3:-1]:
        assert tok.encode(w) == [tok.index[w]]
    ids = tok(["a photo of a red circle.", "X X large star"], context_length=12)
    assert ids.shape == (2, 12) and ids.dtype == torch.long
    assert ids[0].tolist() == [tok.sot_id] + [tok.index[w] for w in "a photo of a red circle .".split()] \
        + [tok.eot_id] + [0] * 3
    assert ids[1, :6].tolist() == [tok.sot_id, tok.index["X"], tok.index["X"], tok.index["large"],
                                   tok.index["star"], tok.eot_id]
    assert int(ids[0].argmax()) == 8  # argmax pooling finds EOT
    assert tok("a photo").shape == (1, tok.context_length)


def test_unknown_words_truncation_and_case():
    tok = MiniTokenizer()
    ids = tok("A Star, on the LEFT.")[0].tolist()
    assert ids[:8] == [tok.sot_id, tok.index["a"], tok.index["star"], tok.index[","], tok.index["on"],
                       tok.index["the"], tok.index["left"], tok.index["."]]
    # a word outside the vocabulary is refused, named, never mapped to <unk> (two classes would share features)
    with pytest.raises(UnknownWordsError, match=r"cannot read 'zebra', 'sneaker' .*model='ViT-B-32'"):
        tok(["a photo of a Zebra.", "a sneaker on the left"])
    with pytest.raises(UnknownWordsError, match=r"cannot read 'sneaker', 'ankle', 'boot'"):
        capt.PromptedCLIP(capt.load_clip("mini"), ["sneaker", "ankle boot"], prompt="none")
    long = tok(" ".join(["red"] * 50), context_length=8)[0]
    assert long.tolist() == [tok.sot_id] + [tok.index["red"]] * 6 + [tok.eot_id]
    with pytest.raises(ValueError):
        MiniTokenizer(["a", "b"])


# -- model ---------------------------------------------------------------------------------------
def test_config_is_a_standard_open_clip_vit():
    from open_clip.model import CLIP

    assert MODEL_CONFIG["vision_cfg"]["layers"] >= 3 and MODEL_CONFIG["text_cfg"]["layers"] >= 3  # prompt depth 3
    m = build_mini(vocab_size=len(default_vocab()))
    assert isinstance(m, CLIP) and m.text_pool_type == "argmax"
    assert m.token_embedding.num_embeddings == len(default_vocab())


def test_checkpoint_sha256_matches_report(report):
    data = DEFAULT_CHECKPOINT.read_bytes()
    assert hashlib.sha256(data).hexdigest() == report["sha256"]
    assert len(data) < 10_000_000


def test_load_mini(mini, report):
    model, tok = mini["model"], mini["tokenizer"]
    assert mini["image_size"] == 32 and len(mini["mean"]) == 3 and len(mini["std"]) == 3
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert count_parameters(model) == report["parameters"]
    assert tok.context_length == model.context_length
    feats = model.encode_text(tok(["a photo of a red circle.", "X X red circle."]), normalize=True)
    assert feats.shape == (2, MODEL_CONFIG["embed_dim"]) and torch.isfinite(feats).all()


@pytest.mark.parametrize("name", ["mini_source", "mini_shape"])
def test_golden_zero_shot_accuracy_matches_report(mini, report, name):
    model, tok = mini["model"], mini["tokenizer"]
    golden = report["report"]["golden"][name]
    ds = load_dataset(name, "test")
    n = golden["n"]
    mean = torch.tensor(mini["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(mini["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        text = model.encode_text(tok([ds.templates[0].format(c) for c in ds.classnames]), normalize=True)
        x = torch.stack([ds[i][0] for i in range(n)])
        y = torch.tensor([ds[i][1] for i in range(n)])
        img = model.encode_image((x - mean) / std, normalize=True)
        acc = ((img @ text.T).argmax(1) == y).float().mean().item()
    assert abs(acc - golden["acc"]) <= 0.01 + 1e-9, (acc, golden["acc"])
    assert acc > 3.0 / len(ds.classnames)


def test_missing_or_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(MiniCheckpointError, match="pretrain_mini.py") as e:
        load_mini(missing)
    assert str(missing) in str(e.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MiniCheckpointError, match="pretrain_mini.py") as e:
        load_mini(bad)
    assert str(bad) in str(e.value)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(DEFAULT_CHECKPOINT.read_bytes()[:100_000])
    with pytest.raises(MiniCheckpointError, match="cut.pt"):
        load_mini(cut)


def test_checkpoint_with_wrong_contents(tmp_path):
    blob = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    del blob["state_dict"]["positional_embedding"]
    path = tmp_path / "partial.pt"
    torch.save(blob, path)
    with pytest.raises(MiniCheckpointError, match="partial.pt"):
        load_mini(path)


def test_loaded_model_scores_are_consistent(mini):
    """open_clip's own logits equal the normalised dot product the evaluators use."""
    model, tok = mini["model"], mini["tokenizer"]
    x = torch.rand(2, 3, 32, 32)
    text = tok(["a photo of a red circle.", "a photo of a blue star."])
    with torch.no_grad():
        logits, _ = model.get_logits(x, text)
        ref = model.logit_scale.exp() * F.normalize(model.encode_image(x), dim=-1) @ \
            F.normalize(model.encode_text(text), dim=-1).T
    assert torch.allclose(logits, ref, atol=1e-5)


@pytest.fixture(scope="module")
def pm():
    """The pretraining script, loaded as a module (it lives in data_scripts/, outside the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data_scripts" / "pretrain_mini.py"
    spec = importlib.util.spec_from_file_location("pretrain_mini", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretraining_is_deterministic(pm):
    """Pretraining twice with the same seed and thread count gives byte-identical checkpoints
    (a few steps stand in for the full run, which data_scripts/pretrain_mini.py records in the report)."""
    import argparse
    from capt.mini_model import tower_config

    args = argparse.Namespace(steps=3, batch=32, lr=3e-3, wd=0.1, warmup=2, seed=0, config=tower_config(),
                              adv_share=0.0, adv_eps=6 / 255)

    def blob(**changes):
        a = argparse.Namespace(**{**vars(args), **changes})
        return pm.checkpoint_bytes(*pm.pretrain(a, log=lambda s: None)[:2], a.config)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        blobs = [blob() for _ in range(2)]
        adversarial = [blob(adv_share=0.5) for _ in range(2)]  # the FGSM share is seeded too
        other = blob(seed=1)
    finally:
        torch.set_num_threads(threads)
    assert hashlib.sha256(blobs[0]).hexdigest() == hashlib.sha256(blobs[1]).hexdigest()
    assert adversarial[0] == adversarial[1] != blobs[0]
    assert other != blobs[0]


def test_the_fgsm_share_moves_only_its_images_and_within_the_radius(pm):
    from capt.mini_model import MiniTokenizer, build_mini
    from capt.data import miniworld as mw

    torch.manual_seed(0)
    tok = MiniTokenizer()
    model = build_mini(vocab_size=len(tok))
    images, texts, match, _ = mw.pretrain_batch(0, 8)
    x = torch.from_numpy(images).float().div_(255)
    out = pm._fgsm_share(model, x, tok(texts), torch.from_numpy(match).float(), 0.5, 4 / 255)
    moved = (out - x).abs().flatten(1).amax(1)
    assert (moved[4:] == 0).all() and (moved[:4] > 0).any() and (moved[:4] <= 4 / 255 + 1e-6).all()
    assert out.min() >= 0 and out.max() <= 1
    assert pm._fgsm_share(model, x, tok(texts), torch.from_numpy(match).float(), 0.0, 4 / 255) is x


def test_an_adversarial_share_outside_0_1_is_refused(pm, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pm.main(["--adv-share", "1.5", "--out", str(tmp_path / "x.pt")])
    assert e.value.code == 2
    assert "--adv-share is a share of each batch, between 0 and 1 (got 1.5)" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
    for argv, message in ((["--patch", "5"], "patch size 5 must divide the image size 32"),
                          (["--head-width", "24"], "head width 24 must divide the tower width 64"),
                          (["--report-only", "--patch", "4"], "--report-only reads the checkpoint's own config")):
        with pytest.raises(SystemExit) as e:
            pm.main([*argv, "--out", str(tmp_path / "x.pt")])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_tower_config_changes_both_towers():
    from capt.mini_model import MODEL_CONFIG, tower_config

    cfg = tower_config(6, 96)
    assert (cfg["vision_cfg"]["layers"], cfg["text_cfg"]["layers"], cfg["vision_cfg"]["width"],
            cfg["text_cfg"]["width"], cfg["text_cfg"]["heads"]) == (6, 6, 96, 96, 3)
    assert tower_config() == MODEL_CONFIG and tower_config() is not MODEL_CONFIG


def test_tower_config_sets_patches_and_heads_and_refuses_what_does_not_divide():
    from capt.mini_model import build_mini, tower_config

    cfg = tower_config(patch=4, head_width=16)
    assert (cfg["vision_cfg"]["patch_size"], cfg["vision_cfg"]["head_width"], cfg["text_cfg"]["heads"]) == (4, 16, 4)
    model = build_mini(cfg, vocab_size=50)
    assert model.visual.positional_embedding.shape[0] == 1 + (32 // 4) ** 2  # 64 image tokens and the class token
    assert model.visual.transformer.resblocks[0].attn.num_heads == 4
    with pytest.raises(ValueError, match="must divide the image size 32"):
        tower_config(patch=5)
    with pytest.raises(ValueError, match="must divide the tower width 64"):
        tower_config(head_width=24)


def test_pretraining_continues_a_checkpoint_on_later_batches(pm):
    """``pretrain(init=...)`` trains the given model further (the probes' continued pretraining) on the
    stream's batches from ``stream_offset``: deterministic, and not the same as starting afresh."""
    import argparse
    from capt.mini_model import load_mini, tower_config

    args = argparse.Namespace(steps=2, batch=16, lr=1e-3, wd=0.1, warmup=1, seed=7, config=tower_config(),
                              adv_share=0.0, adv_eps=6 / 255)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for offset in (500, 500, 0):
            start = load_mini()
            before = {k: v.clone() for k, v in start["model"].state_dict().items()}
            model, tok, _ = pm.pretrain(args, log=lambda s: None, init=start, stream_offset=offset)
            assert model is start["model"] and tok is start["tokenizer"]
            assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
            runs.append(pm.checkpoint_bytes(model, tok, start["config"]))
    finally:
        torch.set_num_threads(threads)
    assert runs[0] == runs[1] != runs[2]


def test_competence_table_reports_every_check_of_the_card(report):
    """The mini-world chapter's competence table: one row per check of the committed card, each beside its
    measured value, robustness under the headline attack; the committed CLIP passes them all."""
    from capt.mini_model import competence_table

    t = competence_table()
    assert list(t["check"]) == list(report["report"]["checks"])
    assert (t["holds"] == "yes").all(), t.to_string()
    strong = report["report"]["aa_book_eps"]["acc"]
    targets = [k for k, v in report["report"]["zero_shot"].items() if v["role"] == "target"]
    row = t.set_index("check").loc["targets mean robust <= 10%", "measured"]
    assert row == f"{100 * sum(strong[k] for k in targets) / len(targets):.1f} %"
