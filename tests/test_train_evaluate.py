"""The one trainer and the one evaluator: resume exactness, checkpoints, tidy rows, bad input."""

import pytest
import torch

import capt
from capt.data import TensorImages
from capt.evaluate import ROW_COLUMNS, evaluate
from capt.train import TrainConfig, load_prompts, seed_everything, train
from conftest import MINI_RUN


@pytest.fixture(scope="module")
def dataset(classnames):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(20, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(20) % len(classnames)
    return TensorImages("toy", images, labels, classnames)


def build(tiny_clip, classnames, method="capt", seed=0):
    seed_everything(seed)
    return capt.get_method(method).build(tiny_clip, classnames, n_ctx=2, depth=2)


CFG = dict(epochs=3, batch_size=8, lr=0.05, eps=4 / 255, alpha=2 / 255, steps=2, checkpoint_every=2)


@pytest.mark.parametrize("method", ["capt", "apt", "fap"])
def test_resume_after_interruption_matches_uninterrupted_run(tiny_clip, classnames, dataset, tmp_path, method):
    cfg = TrainConfig(**CFG)
    full = build(tiny_clip, classnames, method)
    r_full = train(full, dataset, method, cfg, out_dir=tmp_path / "full", progress=False, seed=3)
    assert r_full.finished and r_full.steps == 9

    part = build(tiny_clip, classnames, method)
    r1 = train(part, dataset, method, cfg, out_dir=tmp_path / "part", progress=False, seed=3, stop_after=5)
    assert not r1.finished and r1.steps == 5
    # A fresh process would rebuild the model from scratch: do the same, with another init even.
    again = build(tiny_clip, classnames, method, seed=99)
    r2 = train(again, dataset, method, cfg, out_dir=tmp_path / "part", progress=False, seed=3, resume=True)
    assert r2.finished and r2.steps == 9
    for a, b in zip(full.prompt_parameters(), again.prompt_parameters()):
        assert torch.equal(a, b)
    assert r2.history["total"].tolist() == r_full.history["total"].tolist()
    assert (tmp_path / "part" / "history.csv").exists()


def test_training_moves_prompts_not_clip_and_logs_terms(tiny_clip, classnames, dataset):
    model = build(tiny_clip, classnames, "capt")
    frozen = {n: p.clone() for n, p in tiny_clip.model.named_parameters()}
    before = [p.detach().clone() for p in model.prompt_parameters()]
    r = train(model, dataset, "capt", TrainConfig(**{**CFG, "epochs": 1}), progress=False, seed=3)
    assert set(r.history.columns) >= {"ce", "cons_train", "cons_frozen", "alpha", "total", "lr"}
    assert all(not torch.equal(a, b) for a, b in zip(before, model.prompt_parameters()))
    assert all(torch.equal(p, frozen[n]) for n, p in tiny_clip.model.named_parameters())
    assert (r.history["alpha"].between(0, 1)).all()


def test_lr_schedule_warms_up_then_decays(tiny_clip, classnames, dataset):
    model = build(tiny_clip, classnames, "apt")
    r = train(model, dataset, "apt", TrainConfig(**{**CFG, "epochs": 4, "warmup_epochs": 1}), progress=False, seed=3)
    lr = r.history["lr"].tolist()
    assert lr[0] < lr[2]  # rising during the warm-up epoch (3 steps)
    assert all(a >= b for a, b in zip(lr[3:], lr[4:]))  # cosine after it
    assert lr[-1] == pytest.approx(0.0, abs=1e-12)


def test_resume_refuses_a_checkpoint_of_another_run(tiny_clip, classnames, dataset, tmp_path):
    model = build(tiny_clip, classnames, "capt")
    train(model, dataset, "capt", TrainConfig(**CFG), out_dir=tmp_path, progress=False, seed=3, stop_after=2)
    other = TensorImages("toy", dataset.images, dataset.labels, ["a", "b", "c", "d", "e"])
    model2 = capt.PromptedCLIP(tiny_clip, other.classnames, prompt="maple", n_ctx=2, depth=2)
    with pytest.raises(ValueError, match="belongs to another run .*classnames"):
        train(model2, other, "capt", TrainConfig(**CFG), out_dir=tmp_path, resume=True, progress=False, seed=3)


def test_corrupt_checkpoint_is_a_clear_error(tiny_clip, classnames, dataset, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    model = build(tiny_clip, classnames, "capt")
    with pytest.raises(ValueError, match="corrupt"):
        train(model, dataset, "capt", TrainConfig(**CFG), out_dir=tmp_path, resume=True, progress=False, seed=3)


def test_load_prompts_checks_architecture(tiny_clip, classnames, dataset, tmp_path):
    model = build(tiny_clip, classnames, "capt")
    train(model, dataset, "capt", TrainConfig(**{**CFG, "epochs": 1}), out_dir=tmp_path, progress=False, seed=3)
    fresh = build(tiny_clip, classnames, "capt", seed=5)
    load_prompts(fresh, tmp_path / "checkpoint.pt", same_classes=True)
    assert all(torch.equal(a, b) for a, b in zip(model.prompt_parameters(), fresh.prompt_parameters()))
    other = capt.PromptedCLIP(tiny_clip, ["x", "y"], prompt="maple", n_ctx=2, depth=2)
    load_prompts(other, tmp_path / "checkpoint.pt")  # prompts transfer across class lists
    with pytest.raises(ValueError, match="another class list"):
        load_prompts(other, tmp_path / "checkpoint.pt", same_classes=True)
    deeper = capt.PromptedCLIP(tiny_clip, classnames, prompt="maple", n_ctx=2, depth=3)
    with pytest.raises(ValueError, match="does not fit"):
        load_prompts(deeper, tmp_path / "checkpoint.pt")


def test_method_prompt_mismatch_and_unknown_method(tiny_clip, classnames, dataset):
    model = build(tiny_clip, classnames, "apt")
    with pytest.raises(ValueError, match="build PromptedCLIP"):
        train(model, dataset, "capt", TrainConfig(**CFG), progress=False, seed=3)
    with pytest.raises(ValueError, match="unknown method 'cat'; valid choices: zeroshot, apt, advvpt"):
        capt.get_method("cat")


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-1 / 255), "eps"), (dict(steps=0), "steps must be >= 1"), (dict(epochs=0), "epochs must be >= 1"),
    (dict(lr=0.0), "lr must be > 0"), (dict(batch_size=2.5), "batch_size must be an integer"),
])
def test_bad_train_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_empty_dataset_is_refused(tiny_clip, classnames, dataset):
    model = build(tiny_clip, classnames, "apt")
    with pytest.raises(ValueError, match="empty"):
        train(model, dataset.subset([]), "apt", TrainConfig(**CFG), progress=False, seed=3)


def test_evaluate_rows_and_invariants(tiny_clip, classnames, dataset):
    model = build(tiny_clip, classnames, "capt")
    rows = evaluate(model, dataset, ["clean", "pgd", {"name": "pgd", "eps": 0.0, "steps": 3}, "noise"],
                    eps=8 / 255, steps=5, meta={"method": "capt", "shots": 4, "seed": 1}, progress=False)
    assert list(rows.columns[: len(ROW_COLUMNS)]) == ROW_COLUMNS
    assert rows["n"].tolist() == [20] * 4
    clean = rows.loc[0, "accuracy"]
    assert rows.loc[1, "accuracy"] <= clean
    assert rows.loc[2, "accuracy"] == clean  # eps = 0 is the clean accuracy
    assert rows["dataset"].eq("toy").all() and rows["method"].eq("capt").all()
    sub = evaluate(model, dataset, ["clean"], max_n=7, progress=False)
    assert sub.loc[0, "n"] == 7


def test_evaluate_refuses_mismatched_classes(tiny_clip, dataset):
    model = capt.PromptedCLIP(tiny_clip, ["a", "b"], prompt="none")
    with pytest.raises(ValueError, match="classes"):
        evaluate(model, dataset, ["clean"], progress=False)


def test_rows_keep_per_image_outcomes_and_prompt_shape(tiny_clip, classnames, dataset):
    from capt.results import MASK_COLUMN, decode_mask

    model = build(tiny_clip, classnames, "capt")
    rows = evaluate(model, dataset, ["clean", {"name": "pgd", "eps": 4 / 255, "steps": 2}], progress=False)
    for _, r in rows.iterrows():
        mask = decode_mask(r[MASK_COLUMN], r["n"])
        assert mask.sum() == r["correct"]
    assert rows["depth"].eq(2).all() and rows["n_ctx"].eq(2).all()
    assert rows["passes"].tolist() == [0, 2]


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_result(tiny_clip, classnames, dataset, tmp_path):
    from capt.attacks import AttackSpec
    from capt.evaluate import EvaluationInterrupted

    model = build(tiny_clip, classnames, "capt")
    attacks = ["clean", AttackSpec("pgd", eps=4 / 255, steps=2), AttackSpec("aa", eps=4 / 255, steps=3)]
    kw = dict(batch_size=6, progress=False, seed=5)
    whole = evaluate(model, dataset, attacks, **kw)
    partial = tmp_path / "partial"
    with pytest.raises(EvaluationInterrupted):
        evaluate(model, dataset, attacks, partial_dir=partial, stop_after=2, **kw)
    assert len(list(partial.glob("batch*.json"))) == 2
    resumed = evaluate(model, dataset, attacks, partial_dir=partial, stop_after=2, **kw)  # 4 batches: 2 saved
    cols = ["attack", "n", "correct", "correct_mask", "passes"]
    assert resumed[cols].equals(whole[cols])
    # another evaluation in the same folder does not reuse those batches
    other = evaluate(model, dataset, attacks[:2], partial_dir=partial, **kw)
    assert other[cols].equals(whole[cols].iloc[:2])


def test_experiment_resumes_an_interrupted_evaluation_and_keeps_masks(tiny_clip, tmp_path, monkeypatch):
    import capt.experiments as E
    from capt.attacks import AttackSpec
    from capt.evaluate import EvaluationInterrupted
    from capt.results import MASK_COLUMN

    monkeypatch.setattr(E, "_clip", lambda model, pretrained, device: tiny_clip)
    run = E.RunSpec("zeroshot", "mini_shape", **MINI_RUN)
    attacks = ["clean", AttackSpec("pgd", eps=4 / 255, steps=2), AttackSpec("aa", eps=4 / 255, steps=2)]
    cut = E.Experiment(tmp_path / "cut", progress=False, batch_size=8, stop_after=1)
    with pytest.raises(EvaluationInterrupted):
        cut.evaluate(run, ["mini_shape"], attacks, max_n=20)
    assert len(list((tmp_path / "cut" / "partial").rglob("batch*.json"))) == 1
    cut.stop_after = 2  # 3 batches: 1 saved + 2 new
    resumed = cut.evaluate(run, ["mini_shape"], attacks, max_n=20)
    assert not list((tmp_path / "cut" / "partial").rglob("batch*.json"))  # removed once the rows landed
    whole = E.Experiment(tmp_path / "whole", progress=False, batch_size=8).evaluate(run, ["mini_shape"], attacks,
                                                                                    max_n=20)
    cols = ["attack", "eval_key", "n", "correct", MASK_COLUMN, "depth", "n_ctx"]
    assert resumed[cols].equals(whole[cols])
    assert resumed[MASK_COLUMN].map(len).gt(0).all()
    # aa's key names the weaker attacks it was combined with: alone it is another evaluation
    alone = E.Experiment(tmp_path / "whole", progress=False, batch_size=8).evaluate(run, ["mini_shape"],
                                                                                    attacks[2:], max_n=20)
    assert alone["eval_key"].iloc[0] != whole["eval_key"].iloc[2]


def test_fap_trains_on_a_label_free_kl_attack_and_trades_maple_on_pgd_ce(tiny_clip, classnames):
    from capt.objectives import kl_per_sample

    fap, trades = capt.get_method("fap"), capt.get_method("trades_maple")
    assert (fap.train_attack, trades.train_attack) == ("pgd_kl", "pgd_ce")
    assert fap.prompt == trades.prompt == "maple" and trades.objective.kind == "trades"
    model = build(tiny_clip, classnames, "fap").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    eps = 8 / 255
    with torch.no_grad():
        tf = model.encode_text()
    def attack(labels, steps, method=fap):
        return method.attack(model, x, labels, eps=eps, alpha=2 / 255, steps=steps, text_features=tf,
                             generator=torch.Generator().manual_seed(5))
    a = attack(torch.zeros(6, dtype=torch.long), 5)
    assert torch.equal(a, attack(torch.arange(6) % 5, 5))  # labels unused
    assert (a - x).abs().max() <= eps + 1e-6 and a.min() >= 0 and a.max() <= 1
    one = attack(None, 1)
    with torch.no_grad():
        clean = model(x, tf)
        kl_attacked = kl_per_sample(model(a, tf), clean).mean()
        kl_start = kl_per_sample(model(one, tf), clean).mean()
    assert kl_attacked > kl_start  # five steps drive the prediction further from the clean one than one
