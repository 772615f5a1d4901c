"""PromptedCLIP: exactness against open_clip, parameter counts, frozen weights, gradients, bad input."""

import pytest
import torch
import torch.nn.functional as F

import capt
from capt.prompts import PromptedCLIP


def open_clip_logits(bundle, classnames, images, template="a photo of a {}."):
    m = bundle.model
    tokens = bundle.tokenizer([template.format(c) for c in classnames])
    with torch.no_grad():
        text = m.encode_text(tokens, normalize=True)
        image = m.encode_image(bundle.normalize(images), normalize=True)
        return m.logit_scale.exp() * image @ text.t()


@pytest.mark.parametrize("arch", ["ViT-S-32", "ViT-B-32"])
def test_none_variant_reproduces_open_clip_logits(arch, classnames):
    bundle = capt.load_clip(arch, pretrained=None)
    model = PromptedCLIP(bundle, classnames, prompt="none")
    images = torch.rand(3, 3, bundle.image_size, bundle.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(images)
    ref = open_clip_logits(bundle, classnames, images)
    assert (ours - ref).abs().max().item() <= 1e-4
    assert model.num_prompt_parameters() == 0
    # The frozen teacher is the same computation on the same weights.
    assert torch.allclose(model.frozen_logits(images), ref, atol=1e-4)


def test_template_ensemble_averages_normalised_text_features(tiny_clip, classnames, batch):
    templates = ["a photo of a {}.", "a drawing of a {}."]
    model = PromptedCLIP(tiny_clip, classnames, prompt="none", template=templates)
    m = tiny_clip.model
    with torch.no_grad():
        feats = torch.stack([m.encode_text(tiny_clip.tokenizer([t.format(c) for c in classnames]), normalize=True)
                             for t in templates]).mean(0)
    assert torch.allclose(model.frozen_text_features, F.normalize(feats, dim=-1), atol=1e-6)


def expected_count(variant, n_ctx, depth, wt, wv):
    return {
        "none": 0,
        "text": n_ctx * wt,
        "vision": depth * n_ctx * wv,
        "ivlp": depth * n_ctx * (wt + wv),
        "maple": depth * n_ctx * wt + depth * (wt * wv + wv),
    }[variant]


@pytest.mark.parametrize("variant", capt.PROMPT_VARIANTS)
@pytest.mark.parametrize("n_ctx,depth", [(2, 3), (4, 1)])
def test_trainable_parameter_count_reads_widths_from_the_model(tiny_clip, classnames, variant, n_ctx, depth):
    model = PromptedCLIP(tiny_clip, classnames, prompt=variant, n_ctx=n_ctx, depth=depth, ctx_init=None)
    wt = tiny_clip.model.token_embedding.weight.shape[1]
    wv = tiny_clip.model.visual.conv1.out_channels
    assert wt != wv  # the fixture has different widths, so a swapped width would be caught
    assert model.num_prompt_parameters() == expected_count(variant, n_ctx, depth, wt, wv)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(not n.startswith("clip.") for n in trainable)


@pytest.mark.parametrize("variant", ["text", "vision", "ivlp", "maple"])
def test_training_step_moves_only_prompts_and_reaches_every_prompt(tiny_clip, classnames, batch, variant):
    model = PromptedCLIP(tiny_clip, classnames, prompt=variant, n_ctx=2, depth=3)
    frozen_before = {n: p.clone() for n, p in tiny_clip.model.named_parameters()}
    prompts_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD(model.prompt_parameters(), lr=0.5)
    images, labels = batch
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {n}"
    opt.step()
    for n, p in tiny_clip.model.named_parameters():
        assert torch.equal(p, frozen_before[n]), f"frozen weight {n} changed"
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, prompts_before[n])]
    assert changed == list(prompts_before)


def test_teacher_shares_the_frozen_weights(tiny_clip, classnames):
    a = PromptedCLIP(tiny_clip, classnames, prompt="maple", depth=3)
    b = PromptedCLIP(tiny_clip, classnames, prompt="none")
    assert a.clip is tiny_clip.model and b.clip is tiny_clip.model
    pa = {p.data_ptr() for p in a.clip.parameters()}
    assert pa == {p.data_ptr() for p in tiny_clip.model.parameters()}


def test_text_prompt_initialised_from_the_template_reproduces_it(tiny_clip, classnames, batch):
    # A shallow text prompt initialised from "a photo of a" reproduces the hand-crafted template exactly.
    model = PromptedCLIP(tiny_clip, classnames, prompt="text", n_ctx=4, ctx_init="a photo of a")
    with torch.no_grad():
        assert torch.allclose(model.encode_text(), model.frozen_text_features, atol=1e-6)


def _twins(bundle, classnames, variant):
    """The same prompts run through the deciding prefix of the text context, and through all of it."""
    short = PromptedCLIP(bundle, classnames, prompt=variant, n_ctx=2, depth=2)
    full = PromptedCLIP(bundle, classnames, prompt=variant, n_ctx=2, depth=2, truncate_text=False)
    with torch.no_grad():
        for p in short.prompt_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    full.load_prompt_state_dict(short.prompt_state_dict())
    return short, full


@pytest.mark.parametrize("variant", ["text", "ivlp", "maple"])
def test_truncated_text_context_gives_the_full_context_features_and_gradients(tiny_clip, variant):
    classnames = ["cat", "golden retriever", "a very long class name with many words in it"]
    short, full = _twins(tiny_clip, classnames, variant)
    eot = int(full.prompt_tokens.argmax(1).max())
    assert full.prompt_tokens.shape[1] == 77 and short.prompt_tokens.shape[1] == eot + 1 < 77
    assert torch.equal(short.prompt_tokens, full.prompt_tokens[:, :eot + 1])
    fs, ff = short.encode_text(), full.encode_text()
    assert (fs - ff).abs().max().item() < 1e-6
    weights = torch.randn(ff.shape, generator=torch.Generator().manual_seed(0))
    gs = torch.autograd.grad((fs * weights).sum(), short.prompt_parameters(), allow_unused=True)
    gf = torch.autograd.grad((ff * weights).sum(), full.prompt_parameters(), allow_unused=True)
    assert [a is None for a in gs] == [b is None for b in gf] and any(a is not None for a in gs)
    for a, b in zip(gs, gf):
        assert a is None or torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_text_context_is_kept_whole_where_a_token_sees_later_ones():
    from conftest import make_tiny_clip

    bundle = make_tiny_clip(no_causal_mask=True)
    model = PromptedCLIP(bundle, ["cat", "dog"], prompt="maple", n_ctx=2, depth=2)
    assert model.prompt_tokens.shape[1] == 77  # without a causal mask every token can change the pooled one


def test_prompt_state_dict_roundtrip_and_mismatch(tiny_clip, classnames):
    a = PromptedCLIP(tiny_clip, classnames, prompt="maple", depth=3)
    b = PromptedCLIP(tiny_clip, classnames, prompt="maple", depth=3)
    b.load_prompt_state_dict(a.prompt_state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.prompt_parameters(), b.prompt_parameters()))
    c = PromptedCLIP(tiny_clip, classnames, prompt="maple", depth=2)
    with pytest.raises(ValueError, match="does not fit"):
        c.load_prompt_state_dict(a.prompt_state_dict())


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt="deep"), "valid choices: none, text, vision, ivlp, maple"),
    (dict(n_ctx=0), "n_ctx must be >= 1"),
    (dict(depth=4), "depth=4 is larger than the encoder"),
    (dict(depth=0), "depth must be >= 1"),
    (dict(template="a photo"), "must contain"),
])
def test_bad_prompt_arguments(tiny_clip, classnames, kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptedCLIP(tiny_clip, classnames, **{"prompt": "maple", **kwargs})


def test_empty_class_list(tiny_clip):
    with pytest.raises(ValueError, match="non-empty list"):
        PromptedCLIP(tiny_clip, [], prompt="maple", depth=2)
