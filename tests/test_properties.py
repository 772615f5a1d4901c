"""Property-based tests (hypothesis): the invariants every perturbation and every loss term must keep,
over random batch sizes, image sizes, prompt variants, radii, step sizes and step counts.

Perturbations (``pgd``, ``uniform_noise``, torchattacks' adapters): ``|x_adv - x|_inf <= eps``,
``x_adv`` in ``[0, 1]``, ``eps = 0`` is the identity, the same generator gives the same examples, the
model's prompts and mode are untouched. Losses: KL >= 0 and 0 on identical inputs, alpha in [0, 1],
CAPT's total >= its CE term. Schedules and keys: the LR factor stays in [0, 1]; run keys ignore dict order.

Every test uses tiny random CLIPs (16 or 32 px), ``deadline=None`` and few examples, and no example
database (nothing is written to the working folder).
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capt.attacks import AttackSpec, make_attack, pgd, uniform_noise
from capt.objectives import ALPHA_STRATEGIES, Objective, adaptive_alpha, kl_per_sample
from capt.prompts import PromptedCLIP
from capt.results import stable_key
from capt.train import lr_factor

from conftest import make_tiny_clip

PROPS = settings(deadline=None, database=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(PROPS, max_examples=6)
CLASSES = ["cat", "dog", "car", "tree"]
TOL = 1e-6  # float32 rounding of (x + eps) - x


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def model(size: int, prompt: str) -> PromptedCLIP:
    clip = make_tiny_clip(image_size=size, width=64, layers=2, embed_dim=32, seed=size)
    torch.manual_seed(1)
    return PromptedCLIP(clip, CLASSES, prompt=prompt, n_ctx=2, depth=2).eval()


@st.composite
def batches(draw):
    """A model and a batch of images in [0, 1] (with some pixels exactly 0 or 1) and labels."""
    size = draw(st.sampled_from([16, 32]))
    prompt = draw(st.sampled_from(["none", "text", "maple", "vision"]))
    b = draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.rand(b, 3, size, size, generator=g)
    edge = torch.rand(x.shape, generator=g)
    x = torch.where(edge < 0.1, torch.zeros_like(x), torch.where(edge > 0.9, torch.ones_like(x), x))
    y = torch.randint(0, len(CLASSES), (b,), generator=g)
    return model(size, prompt), x, y


radii = st.one_of(st.floats(0, 16 / 255), st.sampled_from([0.0, 1 / 255, 1.0]))


@PROPS
@given(batches(), radii, st.integers(1, 4), st.sampled_from(["ce", "cw"]), st.booleans(),
       st.one_of(st.none(), st.floats(0, 4 / 255)), st.integers(0, 1000))
def test_pgd_stays_in_the_ball_and_in_pixel_range(mxy, eps, steps, loss, random_start, alpha, seed):
    m, x, y = mxy
    x_adv = pgd(m, x, y, eps=eps, alpha=alpha, steps=steps, loss=loss, random_start=random_start,
                generator=torch.Generator().manual_seed(seed))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert (x_adv - x).abs().max().item() <= eps + TOL
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1


@PROPS
@given(batches(), st.integers(1, 4), st.sampled_from(["ce", "cw"]), st.booleans())
def test_pgd_with_eps_zero_is_the_identity(mxy, steps, loss, random_start):
    m, x, y = mxy
    x_adv = pgd(m, x, y, eps=0.0, steps=steps, loss=loss, random_start=random_start,
                generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()  # a copy: the caller's tensor is safe


@PROPS
@given(batches(), st.floats(1 / 255, 16 / 255), st.integers(1, 3), st.integers(0, 1000))
def test_pgd_is_deterministic_under_the_same_generator(mxy, eps, steps, seed):
    m, x, y = mxy
    a = pgd(m, x, y, eps=eps, steps=steps, generator=torch.Generator().manual_seed(seed))
    b = pgd(m, x, y, eps=eps, steps=steps, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


@PROPS
@given(batches(), st.floats(1 / 255, 16 / 255), st.integers(1, 3))
def test_pgd_leaves_the_model_untouched(mxy, eps, steps):
    m, x, y = mxy
    before = {k: v.clone() for k, v in m.prompt_state_dict().items()}
    m.train()
    pgd(m, x, y, eps=eps, steps=steps, generator=torch.Generator().manual_seed(0))
    assert m.training
    m.eval()
    after = m.prompt_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in m.parameters())


@PROPS
@given(batches(), radii, st.integers(0, 1000))
def test_uniform_noise_stays_in_the_ball_and_is_reproducible(mxy, eps, seed):
    _, x, _ = mxy
    a = uniform_noise(x, eps, generator=torch.Generator().manual_seed(seed))
    b = uniform_noise(x, eps, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)
    assert (a - x).abs().max().item() <= eps + TOL and a.min() >= 0 and a.max() <= 1
    if eps == 0:
        assert torch.equal(a, x)


@PROPS
@given(batches(), st.sampled_from(["pgd", "cw_pgd", "noise"]), st.floats(1 / 255, 8 / 255), st.integers(1, 3),
       st.integers(0, 100))
def test_make_attack_same_seed_same_examples(mxy, name, eps, steps, seed):
    """An evaluation is repeatable: two attacks built from the same spec and seed give the same examples."""
    m, x, y = mxy
    spec = AttackSpec(name, eps=eps, steps=steps)
    a = make_attack(spec, m, seed=seed)(x, y)
    b = make_attack(spec, m, seed=seed)(x, y)
    assert torch.equal(a, b) and (a - x).abs().max().item() <= eps + TOL


@FEW
@given(batches(), st.sampled_from(["ta_pgd", "apgd", "apgdt"]), st.floats(1 / 255, 8 / 255), st.integers(0, 100))
def test_torchattacks_adapters_stay_in_the_ball_and_are_seeded(mxy, name, eps, seed):
    m, x, y = mxy
    spec = AttackSpec(name, eps=eps, steps=3)
    state = torch.get_rng_state()
    a = make_attack(spec, m, seed=seed)(x, y)
    assert torch.equal(torch.get_rng_state(), state), "the global generator must not be consumed"
    b = make_attack(spec, m, seed=seed)(x, y)
    assert torch.equal(a, b)
    assert (a - x).abs().max().item() <= eps + TOL and a.min() >= 0 and a.max() <= 1


# -- losses ---------------------------------------------------------------------------------------------
logits = st.integers(1, 6).flatmap(lambda b: st.integers(2, 7).flatmap(lambda c: st.tuples(
    st.just(b), st.just(c), st.integers(0, 2**31 - 1), st.floats(0.1, 50))))


def _draw_logits(spec):
    b, c, seed, scale = spec
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, generator=g) * scale for _ in range(3)], torch.randint(0, c, (b,), generator=g)


@PROPS
@given(logits)
def test_kl_is_non_negative_and_zero_on_identical_inputs(spec):
    (a, t, _), _ = _draw_logits(spec)
    assert (kl_per_sample(a, t) >= -1e-5).all()
    assert kl_per_sample(t, t).abs().max() <= 1e-5


@PROPS
@given(logits, st.sampled_from(ALPHA_STRATEGIES), st.floats(0, 1))
def test_alpha_lies_in_the_unit_interval_and_carries_no_gradient(spec, strategy, value):
    (a, t, f), y = _draw_logits(spec)
    a.requires_grad_(True)
    kl_t, kl_f = kl_per_sample(a, t), kl_per_sample(a, f)
    alpha = adaptive_alpha(strategy, f, y, kl_t, kl_f, value)
    assert not alpha.requires_grad
    assert ((alpha >= 0) & (alpha <= 1 + 1e-6)).all()


@PROPS
@given(logits, st.sampled_from(ALPHA_STRATEGIES), st.floats(0, 5), st.sampled_from(["clean", "adv", "both"]))
def test_capt_total_is_at_least_its_ce_term(spec, strategy, lam, ce_on):
    (clean, adv, frozen), y = _draw_logits(spec)
    total, terms = Objective("capt", lam=lam, alpha_strategy=strategy, ce_on=ce_on)(y, clean, adv, frozen)
    assert torch.isfinite(total)
    assert terms["total"] >= terms["ce"] - 1e-5
    assert terms["cons_train"] >= -1e-5 and terms["cons_frozen"] >= -1e-5


# -- schedules and keys ------------------------------------------------------------------------------------
@PROPS
@given(st.integers(1, 500), st.integers(0, 50), st.data())
def test_lr_factor_stays_in_the_unit_interval(total, warmup, data):
    warmup = min(warmup, total - 1)
    step = data.draw(st.integers(0, total - 1))
    assert 0 <= lr_factor(step, total, warmup) <= 1


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=8)


@PROPS
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_run_keys_ignore_dict_order(d):
    assert stable_key(d) == stable_key(dict(reversed(list(d.items()))))
    assert len(stable_key(d)) == 16
