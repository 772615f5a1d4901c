"""Attacks: the L-inf ball and pixel range, loss ascent, robust <= clean, agreement with torchattacks."""

import pytest
import torch
import torch.nn.functional as F

from capt import attacks
from capt.attacks import AttackSpec, make_attack, margin_loss, pgd
from capt.prompts import PromptedCLIP


@pytest.fixture(scope="module")
def model(tiny_clip, classnames):
    torch.manual_seed(0)
    return PromptedCLIP(tiny_clip, classnames, prompt="maple", depth=2).eval()


@pytest.fixture(scope="module")
def data(model):
    """Images the model classifies 'correctly' by construction: labels are its own clean predictions."""
    x = torch.rand(96, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


def acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("eps,steps,loss", [(1 / 255, 1, "ce"), (4 / 255, 5, "ce"), (8 / 255, 3, "cw"), (1.0, 2, "ce")])
def test_pgd_stays_in_the_ball_and_in_pixel_range(model, data, eps, steps, loss):
    x, y = data
    x_adv = pgd(model, x, y, eps=eps, steps=steps, loss=loss, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1
    assert not x_adv.requires_grad


def test_pgd_increases_the_loss_and_robust_accuracy_is_at_most_clean(model, data):
    x, y = data
    x_adv = pgd(model, x, y, eps=4 / 255, alpha=1 / 255, steps=10, random_start=False)
    with torch.no_grad():
        before = F.cross_entropy(model(x), y, reduction="none")
        after = F.cross_entropy(model(x_adv), y, reduction="none")
    assert after.mean() > before.mean()
    assert (after >= before - 1e-5).float().mean() >= 0.95
    assert acc(model, x_adv, y) <= acc(model, x, y)
    assert acc(model, x_adv, y) < 0.5


def test_eps_zero_gives_clean_accuracy(model, data):
    x, y = data
    x_adv = pgd(model, x, y, eps=0.0, steps=5)
    assert torch.equal(x_adv, x)


def test_pgd_leaves_prompts_and_mode_untouched(model, data):
    x, y = data
    before = [p.detach().clone() for p in model.prompt_parameters()]
    model.train()
    pgd(model, x[:8], y[:8], eps=2 / 255, steps=2)
    assert model.training
    model.eval()
    assert all(torch.equal(a, b) for a, b in zip(before, model.prompt_parameters()))
    assert all(p.grad is None for p in model.prompt_parameters())


def test_capt_pgd_agrees_with_torchattacks_pgd(model, data):
    x, y = data
    spec = dict(eps=2 / 255, steps=10, alpha=0.5 / 255)
    ours = make_attack(AttackSpec("pgd", **spec), model, seed=0)(x, y)
    theirs = make_attack(AttackSpec("ta_pgd", **spec), model, seed=0)(x, y)
    a, b = acc(model, ours, y), acc(model, theirs, y)
    assert abs(a - b) <= 0.08, (a, b)  # different random starts: equal within sampling noise
    assert (theirs - x).abs().max() <= spec["eps"] + 1e-6


def test_same_seed_same_adversarial_examples(model, data):
    x, y = data
    a = make_attack(AttackSpec("pgd", eps=2 / 255, steps=3), model, seed=5)(x[:16], y[:16])
    b = make_attack(AttackSpec("pgd", eps=2 / 255, steps=3), model, seed=5)(x[:16], y[:16])
    assert torch.equal(a, b)


def test_random_noise_hurts_less_than_pgd(model, data):
    x, y = data
    noisy = make_attack(AttackSpec("noise", eps=4 / 255), model)(x, y)
    adv = make_attack(AttackSpec("pgd", eps=4 / 255, steps=10), model)(x, y)
    assert (noisy - x).abs().max() <= 4 / 255 + 1e-6
    assert acc(model, adv, y) < acc(model, noisy, y)


def test_margin_loss_by_hand():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 2])
    assert margin_loss(z, y).tolist() == [2.0 - 3.0, 5.0 - (-1.0)]


@pytest.mark.parametrize("name", ["apgd", "apgdt", "autoattack"])
def test_torchattacks_adapters_respect_the_ball(model, data, name):
    x, y = data
    x, y = x[:6], y[:6]
    steps = 3
    x_adv = make_attack(AttackSpec(name, eps=4 / 255, steps=steps), model, seed=0)(x, y) if name != "autoattack" \
        else make_attack(AttackSpec(name, eps=4 / 255), model, seed=0)(x, y)
    assert (x_adv - x).abs().max().item() <= 4 / 255 + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert acc(model, x_adv, y) <= acc(model, x, y)


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-0.1), "eps .* must be >= 0"),
    (dict(eps=2.0), "eps .* must be <= 1"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(loss="hinge"), "unknown attack loss 'hinge'; valid choices: ce, cw"),
])
def test_bad_pgd_arguments(model, data, kwargs, match):
    x, y = data
    with pytest.raises(ValueError, match=match):
        pgd(model, x[:2], y[:2], **kwargs)


def test_images_outside_pixel_range_are_rejected(model, data):
    x, y = data
    with pytest.raises(ValueError, match=r"\[0, 1\] pixel space"):
        pgd(model, x[:2] * 2 - 1, y[:2], eps=1 / 255)


def test_unknown_attack_name():
    with pytest.raises(ValueError, match="unknown attack 'fgsm'; valid choices: clean, noise, pgd"):
        AttackSpec("fgsm")


def test_the_table_of_attack_kinds_is_what_everything_reads(model, monkeypatch):
    """Names, labels, families, costs and the attack itself all come from the kind's row: change a row
    and every reader follows."""
    from dataclasses import replace

    import capt.attacks as A
    from capt.attacks import ATTACKS, FAMILIES, KINDS, attack_cost, make_attack

    assert ATTACKS == tuple(KINDS) and "aa" in KINDS and "autoattack" in KINDS
    for kind in KINDS.values():
        assert kind.family in FAMILIES and kind.impl in ("capt", "torchattacks")
        assert set(kind.fields) <= {"eps", "steps", "alpha"}
    assert AttackSpec("pgd", eps=4 / 255, steps=10).label == "pgd-10"
    assert AttackSpec("aa", eps=4 / 255).label == "aa"
    assert AttackSpec("aa", eps=4 / 255, steps=10, options={"targets": 3}).label == "aa-10-t3"
    # costs in image-tower forward+backward passes per image
    assert attack_cost(AttackSpec("pgd", steps=10)) == 10
    assert attack_cost(AttackSpec("clean")) == 0
    aa = AttackSpec("aa", steps=100)
    assert attack_cost(aa, robust=1.0) == 1000  # every image survives: the fixed budget
    assert attack_cost(aa, robust=0.1) < attack_cost(aa, robust=0.5) < 1000
    built = []
    row = replace(KINDS["noise"], label="fuzz", family="weak", cost=lambda s, r: 7.0,
                  build=lambda spec, target: built.append((spec.name, target.seed)) or "the attack")
    monkeypatch.setitem(A.KINDS, "noise", row)
    spec = AttackSpec("noise", eps=4 / 255)
    assert (spec.label, spec.family, attack_cost(spec)) == ("fuzz", "weak", 7.0)
    assert make_attack(spec, model, seed=5) == "the attack" and built == [("noise", 5)]


def test_attack_keys_cover_every_field_that_matters():
    base = AttackSpec("aa", eps=4 / 255)
    assert base.key == AttackSpec("aa", eps=4 / 255).key
    assert base.key != AttackSpec("aa", eps=4 / 255, options={"targets": 3}).key
    assert base.key != AttackSpec("aa", eps=2 / 255).key != AttackSpec("aa", eps=4 / 255, steps=10).key
    assert AttackSpec("pgd", eps=4 / 255).key == AttackSpec("pgd", eps=4 / 255, alpha=1 / 255).key  # alpha resolved
    assert AttackSpec("pgd", eps=4 / 255).key != AttackSpec("pgd", eps=4 / 255, alpha=2 / 255).key
    assert AttackSpec("cw", options={"c": 1.0}).key != AttackSpec("cw", options={"c": 2.0}).key
    # fields a kind does not read do not split its key
    assert AttackSpec("clean").key == AttackSpec("clean", eps=8 / 255, steps=3).key


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="aa", alpha=0.01), "no step size alpha"),
    (dict(name="aa", options={"restarts": 5}), "reads no option 'restarts'; valid options: targets"),
    (dict(name="pgd", options={"c": 1}), "valid options: none"),
    (dict(name="aa", options={"targets": -1}), "targets .* must be >= 0"),
])
def test_options_and_fields_nothing_reads_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttackSpec(**kwargs)


def test_a_rows_label_names_its_kind():
    """The report reads a row's attack kind from the table's label patterns, never from the label's text."""
    from capt.attacks import KINDS, kind_of_label

    for name, kind in KINDS.items():
        spec = AttackSpec(name, **({"eps": 4 / 255} if "eps" in kind.fields else {}),
                          **({"steps": 7} if "steps" in kind.fields else {}))
        assert kind_of_label(spec.label) is kind, spec.label
    assert kind_of_label(AttackSpec("aa", eps=4 / 255, steps=10, options={"targets": 3}).label).name == "aa"
    assert kind_of_label("apgdt-10").name == "apgdt" and kind_of_label("cw_pgd-3").name == "cw_pgd"
    assert kind_of_label("fgsm") is None
