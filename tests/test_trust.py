"""Evaluations that can be trusted: the sanity checks against gradient masking, on the pretrained mini CLIP.

On a fixed subset of ``mini_shape``'s test split, for zero-shot CLIP and for a briefly CAPT-tuned model:
robust accuracy falls monotonically with the L-inf radius; an unbounded attack (eps = 1) leaves almost
nothing; uniform noise of the same radius hurts far less than PGD; more PGD steps never help the model
beyond noise; and AutoAttack (standard settings, from torchattacks' parts) is at least as strong as PGD-100,
and capt's own ``aa`` as strong as it.
(Carlini and Wagner's and Athalye et al.'s checklists; the book's attack-strength chapter runs the same
checks at scale.)
"""

from __future__ import annotations

import pytest
import torch

import capt
from capt.attacks import AttackSpec
from capt.data import load_dataset
from capt.data.fewshot import sample_few_shot
from capt.evaluate import evaluate
from capt.train import TrainConfig, seed_everything, train

N = 64                     # images for the sweeps
N_AA = 32                  # AutoAttack's subset (its Square and FAB stages are slow on a CPU)
EPS = [0, 1, 2, 4, 8]      # /255
NOISE = 2                  # "beyond noise": two images of the subset


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mini():
    return capt.load_clip("mini")


@pytest.fixture(scope="module")
def test_set():
    return load_dataset("mini_shape", "test")


@pytest.fixture(scope="module")
def models(mini, test_set):
    """Zero-shot CLIP, and CAPT tuned for a few steps on 2 shots per class (ε = 4/255)."""
    zeroshot = capt.PromptedCLIP(mini, test_set.classnames, prompt="none", template=test_set.templates)
    shots = sample_few_shot(load_dataset("mini_shape", "train"), 2, seed=1)
    seed_everything(1)
    tuned = capt.PromptedCLIP(mini, shots.classnames, prompt="maple", n_ctx=2, depth=3, template=shots.templates)
    train(tuned, shots, "capt", TrainConfig(epochs=2, batch_size=10, lr=0.01, eps=4 / 255, alpha=4 / 255, steps=2,
                                            seed=1), progress=False)
    return {"zeroshot": zeroshot, "capt (tuned)": tuned}


def acc(model, data, attacks, n=N):
    rows = evaluate(model, data, attacks, max_n=n, seed=0, progress=False, batch_size=64)
    assert (rows["n"] == min(n, len(data))).all()
    return dict(zip(rows["attack"] + "@" + rows["eps"].map(lambda e: f"{e * 255:g}"), rows["accuracy"]))


@pytest.fixture(scope="module")
def sweeps(models, test_set):
    out = {}
    for name, model in models.items():
        specs = ["clean", *[AttackSpec("pgd", eps=e / 255, steps=10) for e in EPS], AttackSpec("pgd", eps=1.0, steps=10),
                 *[AttackSpec("noise", eps=e / 255) for e in (4, 8)]]
        out[name] = acc(model, test_set, specs)
    return out


@pytest.mark.parametrize("name", ["zeroshot", "capt (tuned)"])
def test_robust_accuracy_falls_monotonically_with_eps(sweeps, name):
    a = sweeps[name]
    curve = [a[f"pgd-10@{e}"] for e in EPS]
    assert curve[0] == a["clean@0"], "eps = 0 must give the clean accuracy exactly"
    assert all(x >= y for x, y in zip(curve, curve[1:])), f"not monotone in eps: {dict(zip(EPS, curve))}"
    assert curve[0] - curve[-1] >= 50, f"an attack of 8/255 should hurt a 32 px model badly: {curve}"


@pytest.mark.parametrize("name", ["zeroshot", "capt (tuned)"])
def test_an_unbounded_attack_drives_accuracy_to_zero(sweeps, name):
    assert sweeps[name]["pgd-10@255"] <= 100 * 1 / N, sweeps[name]


@pytest.mark.parametrize("name", ["zeroshot", "capt (tuned)"])
def test_uniform_noise_hurts_far_less_than_pgd_of_the_same_eps(sweeps, name):
    a = sweeps[name]
    for e in (4, 8):
        assert a[f"noise@{e}"] >= a["clean@0"] - 10, f"noise of {e}/255 should barely matter: {a}"
        assert a[f"noise@{e}"] - a[f"pgd-10@{e}"] >= 40, f"PGD at {e}/255 should beat noise by far: {a}"


def test_more_pgd_steps_never_help_beyond_noise(models, test_set):
    steps = [1, 3, 10, 30]
    a = acc(models["zeroshot"], test_set, [AttackSpec("pgd", eps=2 / 255, steps=k) for k in steps])
    curve = [a[f"pgd-{k}@2"] for k in steps]
    tol = 100 * NOISE / N
    assert all(y <= x + tol for x, y in zip(curve, curve[1:])), f"robust accuracy rose with steps: {curve}"
    assert curve[-1] < curve[0], curve


def test_autoattack_is_at_least_as_strong_as_pgd100(models, test_set):
    spec_pgd = AttackSpec("pgd", eps=4 / 255, steps=100)
    spec_aa = AttackSpec("autoattack", eps=4 / 255)
    spec_capt_aa = AttackSpec("aa", eps=4 / 255)
    rows = evaluate(models["zeroshot"], test_set, ["clean", spec_pgd, spec_aa, spec_capt_aa], max_n=N_AA, seed=0,
                    progress=False)
    clean, pgd100, aa, capt_aa = rows["accuracy"].tolist()
    assert aa <= pgd100 <= clean, (clean, pgd100, aa)
    assert clean >= 90
    # capt's aa (APGD-CE + APGD-T, the worst case with PGD-100) is as strong as torchattacks' whole standard
    # AutoAttack (which adds FAB-T and Square) to within one image
    assert capt_aa <= pgd100 and capt_aa <= aa + 100 / N_AA, (pgd100, aa, capt_aa)
