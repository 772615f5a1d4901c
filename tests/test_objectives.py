"""Objectives: hand-computed values for every alpha strategy, reductions, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from capt.objectives import Objective, adaptive_alpha, kl_per_sample

# Two samples, three classes: logits chosen so every quantity is easy to write down.
LABELS = torch.tensor([0, 2])
CLEAN = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
ADV = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
FROZEN = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0)]])


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def kl(target_row, adv_row):
    p, q = softmax(target_row), softmax(adv_row)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_kl_is_target_to_adversarial_per_sample():
    got = kl_per_sample(ADV, CLEAN)
    want = [kl(CLEAN[i].tolist(), ADV[i].tolist()) for i in range(2)]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    # Matches torch's kl_div with the clean distribution as target, batchmean.
    ref = F.kl_div(F.log_softmax(ADV, 1), F.softmax(CLEAN, 1), reduction="batchmean")
    assert torch.allclose(got.mean(), ref, atol=1e-6)


def test_alpha_frozen_confidence_is_frozen_probability_of_true_class():
    a = adaptive_alpha("frozen_confidence", FROZEN, LABELS)
    e = math.e
    assert torch.allclose(a, torch.tensor([e / (e + 2), 2 / 4]), atol=1e-6)


def test_alpha_agreement_is_one_where_frozen_clip_is_right():
    # sample 0: frozen argmax 0 == label 0 -> 1; sample 1: argmax 2 == label 2 -> 1; flip a label -> 0
    assert adaptive_alpha("agreement", FROZEN, LABELS).tolist() == [1.0, 1.0]
    assert adaptive_alpha("agreement", FROZEN, torch.tensor([1, 2])).tolist() == [0.0, 1.0]


def test_alpha_fixed_and_loss_ratio():
    assert float(adaptive_alpha("fixed", None, LABELS, value=0.3)) == pytest.approx(0.3)
    kt, kf = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])
    assert float(adaptive_alpha("loss_ratio", None, LABELS, kt, kf)) == pytest.approx(2.0 / 4.0)


@pytest.mark.parametrize("strategy", ["frozen_confidence", "fixed", "agreement", "loss_ratio"])
def test_capt_total_matches_hand_computation(strategy):
    obj = Objective("capt", lam=1.5, alpha_strategy=strategy, alpha_value=0.25)
    total, terms = obj(LABELS, CLEAN, ADV, FROZEN)
    ce = sum(-math.log(softmax(CLEAN[i].tolist())[LABELS[i]]) for i in range(2)) / 2
    kt = [kl(CLEAN[i].tolist(), ADV[i].tolist()) for i in range(2)]
    kf = [kl(FROZEN[i].tolist(), ADV[i].tolist()) for i in range(2)]
    e = math.e
    alpha = {"frozen_confidence": [e / (e + 2), 0.5], "fixed": [0.25, 0.25], "agreement": [1.0, 1.0],
             "loss_ratio": [sum(kt) / (sum(kt) + sum(kf))] * 2}[strategy]
    cons = sum((1 - a) * t + a * f for a, t, f in zip(alpha, kt, kf)) / 2
    assert float(total) == pytest.approx(ce + 1.5 * cons, rel=1e-5)
    assert terms["total"] == pytest.approx(float(total))


def test_alpha_is_not_backpropagated():
    # Gradient w.r.t. the frozen logits flows through KL(adv || frozen) only, never through alpha.
    frozen = FROZEN.clone().requires_grad_(True)
    total, _ = Objective("capt", lam=1.5, alpha_strategy="frozen_confidence")(LABELS, CLEAN, ADV, frozen)
    (got,) = torch.autograd.grad(total, frozen)
    frozen2 = FROZEN.clone().requires_grad_(True)
    alpha = F.softmax(FROZEN, 1).gather(1, LABELS[:, None]).squeeze(1)  # a constant
    manual = F.cross_entropy(CLEAN, LABELS) + 1.5 * (
        (1 - alpha) * kl_per_sample(ADV, CLEAN) + alpha * kl_per_sample(ADV, frozen2)).mean()
    (want,) = torch.autograd.grad(manual, frozen2)
    assert torch.allclose(got, want, atol=1e-6)


def test_lambda_zero_reduces_to_ce_and_fixed_zero_alpha_to_trades():
    total, _ = Objective("capt", lam=0.0)(LABELS, CLEAN, ADV, None)
    assert torch.allclose(total, F.cross_entropy(CLEAN, LABELS))
    capt0, _ = Objective("capt", lam=2.0, alpha_strategy="fixed", alpha_value=0.0)(LABELS, CLEAN, ADV, FROZEN)
    trades, _ = Objective("trades", lam=2.0)(LABELS, CLEAN, ADV)
    assert torch.allclose(capt0, trades)


@pytest.mark.parametrize("ce_on,want", [
    ("clean", F.cross_entropy(CLEAN, LABELS)), ("adv", F.cross_entropy(ADV, LABELS)),
    ("both", 0.5 * (F.cross_entropy(CLEAN, LABELS) + F.cross_entropy(ADV, LABELS))),
])
def test_ce_on(ce_on, want):
    total, terms = Objective("capt", lam=0.0, ce_on=ce_on)(LABELS, CLEAN, ADV, None)
    assert torch.allclose(total, want)


def test_ce_adv_objective():
    total, _ = Objective("ce_adv")(LABELS, None, ADV, None)
    assert torch.allclose(total, F.cross_entropy(ADV, LABELS))


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="magic"), "unknown objective 'magic'; valid choices: none, ce_adv, trades, fap, capt"),
    (dict(alpha_strategy="random"), "unknown alpha strategy 'random'; valid choices: frozen_confidence, fixed"),
    (dict(ce_on="neither"), "unknown ce_on 'neither'; valid choices: clean, adv, both"),
    (dict(lam=-1.0), "lambda"),
    (dict(alpha_value=1.5), "alpha_value must be <= 1"),
])
def test_bad_objective_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Objective(**kwargs)


def test_capt_needs_frozen_logits():
    with pytest.raises(ValueError, match="frozen CLIP"):
        Objective("capt")(LABELS, CLEAN, ADV, None)


def test_fap_objective_by_hand():
    # cos(clean, adv features): sample 0 identical directions -> 1 (weight 2); sample 1 orthogonal -> 0 (weight 1)
    clean_f = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    adv_f = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    kl0, kl1 = kl(CLEAN[0].tolist(), ADV[0].tolist()), kl(CLEAN[1].tolist(), ADV[1].tolist())
    ce = -(math.log(softmax([2.0, 0.0, 0.0])[0]) + math.log(softmax([0.0, 1.0, 0.0])[2])) / 2
    total, terms = Objective("fap", lam=1.5)(LABELS, CLEAN, ADV, None, clean_features=clean_f, adv_features=adv_f)
    assert total.item() == pytest.approx(ce + 1.5 * (2 * kl0 + 1 * kl1) / 2, abs=1e-6)
    assert terms["cos"] == pytest.approx(0.5) and terms["ce"] == pytest.approx(ce, abs=1e-6)
    # Opposite features switch the consistency term off (weight 1 + cos = 0): only CE remains.
    total, _ = Objective("fap", lam=1.5)(LABELS, CLEAN, ADV, None, clean_features=clean_f, adv_features=-clean_f)
    assert total.item() == pytest.approx(ce, abs=1e-6)


def test_fap_gradient_reaches_the_features_through_the_weight():
    clean_f = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    total, _ = Objective("fap", lam=1.0)(LABELS, CLEAN, ADV, None, clean_features=clean_f,
                                         adv_features=torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    total.backward()
    assert clean_f.grad.abs().sum() > 0  # not detached: minimising it pulls the clean and adversarial features apart


def test_fap_needs_features():
    with pytest.raises(ValueError, match="image features"):
        Objective("fap")(LABELS, CLEAN, ADV, None)
    assert Objective("fap").needs_features and not Objective("trades").needs_features


def test_capt_logs_the_spread_of_alpha_over_the_batch():
    """The history's alpha terms give the distribution of alpha over the training images: its mean, mean
    square and share below 0.5 (here alpha = e/(e+2) = 0.576 and 0.5 exactly: none below)."""
    _, terms = Objective("capt", alpha_strategy="frozen_confidence")(LABELS, CLEAN, ADV, FROZEN)
    a = [math.e / (math.e + 2), 0.5]
    assert terms["alpha"] == pytest.approx(sum(a) / 2, abs=1e-6)
    assert terms["alpha_sq"] == pytest.approx(sum(v * v for v in a) / 2, abs=1e-6)
    assert terms["alpha_low"] == 0.0
    _, low = Objective("capt", alpha_strategy="agreement")(torch.tensor([1, 2]), CLEAN, ADV, FROZEN)
    assert (low["alpha"], low["alpha_sq"], low["alpha_low"]) == (0.5, 0.5, 0.5)
    _, fixed = Objective("capt", alpha_strategy="fixed", alpha_value=0.25)(LABELS, CLEAN, ADV, FROZEN)
    assert (fixed["alpha"], fixed["alpha_sq"], fixed["alpha_low"]) == pytest.approx((0.25, 0.0625, 1.0))
