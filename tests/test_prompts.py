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
    # the hand-crafted templates (the frozen teacher's features) are cut the same way, to the same features
    assert full.template_tokens.shape[1] == 77 > short.template_tokens.shape[1]
    assert (short.frozen_text_features - full.frozen_text_features).abs().max().item() < 1e-6
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


# -- where the vision prompts enter: a reference forward through open_clip's own modules, with hooks --------
@pytest.fixture(scope="module")
def vit_b32():
    torch.manual_seed(0)
    bundle = capt.load_clip("ViT-B-32", pretrained=None)
    # open_clip initialises ln_pre to the identity affine map, under which the two placements agree exactly
    # (the next block's ln_1 re-normalises the prompts); trained weights (OpenAI's) have a learned one.
    with torch.no_grad():
        bundle.model.visual.ln_pre.weight.normal_(1.0, 0.3)
        bundle.model.visual.ln_pre.bias.normal_(0.0, 0.3)
    return bundle


def _hooked_logits(bundle, model, images, text_tokens):
    """open_clip's own ``encode_image``/``encode_text`` with the prompts put in by hooks: the first layer's
    vision prompts appended to ``ln_pre``'s input (VPT/IVLP/MaPLe reference code), deeper layers' prompts
    written over the prompt slots at their block's input, the text context over token embeddings 1..n_ctx."""
    m, v, n = bundle.model, bundle.model.visual, model.n_ctx
    variant = capt.prompts.VARIANTS[model.prompt]
    text = [model.ctx, *model.text_deep] if variant.text == "deep" else [model.ctx] if variant.learns_text else []
    if variant.vision == "coupled":
        vision = [c(p) for c, p in zip(model.couplers, text)]
    else:
        vision = [model.vision_ctx, *model.vision_deep] if variant.vision == "deep" else []

    def append(mod, args):
        x = args[0]
        return (torch.cat([x, vision[0].unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1), *args[1:])

    def overwrite(prompt, at_end):
        def hook(mod, args, kwargs):
            x = args[0].clone()
            if at_end:
                x[:, -n:] = prompt
            else:
                x[:, 1:1 + n] = prompt
            return (x, *args[1:]), kwargs
        return hook

    def embed(mod, args, out):
        out = out.clone()
        out[:, 1:1 + n] = text[0]
        return out

    handles = []
    try:
        if vision:
            handles.append(v.ln_pre.register_forward_pre_hook(append))
            handles += [v.transformer.resblocks[i].register_forward_pre_hook(overwrite(p, True), with_kwargs=True)
                        for i, p in enumerate(vision[1:], 1)]
        if text:
            handles.append(m.token_embedding.register_forward_hook(embed))
            handles += [m.transformer.resblocks[i].register_forward_pre_hook(overwrite(p, False), with_kwargs=True)
                        for i, p in enumerate(text[1:], 1)]
        image = m.encode_image(bundle.normalize(images), normalize=True)
        tokens = text_tokens if text else bundle.tokenizer([f"a photo of a {c}." for c in model.classnames])
        txt = m.encode_text(tokens, normalize=True)
    finally:
        for h in handles:
            h.remove()
    return m.logit_scale.exp() * image @ txt.t()


@pytest.mark.parametrize("variant", ["vision", "ivlp", "maple"])
def test_vit_b32_prompts_before_ln_pre_match_a_hooked_open_clip_forward(vit_b32, variant):
    assert vit_b32.model.transformer.batch_first and vit_b32.model.visual.transformer.batch_first
    classnames = ["cat", "golden retriever", "sea lion"]
    torch.manual_seed(1)
    model = PromptedCLIP(vit_b32, classnames, prompt=variant, n_ctx=2, depth=9).eval()
    with torch.no_grad():
        for p in model.prompt_parameters():  # away from a near-zero init, and not unit-scaled (which ln_pre keeps)
            p.add_(3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) + 1)
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    tokens = vit_b32.tokenizer([f"a photo of a {c}." for c in classnames])
    with torch.no_grad():
        ours = model(images)
        ref = _hooked_logits(vit_b32, model, images, tokens)
        after = PromptedCLIP(vit_b32, classnames, prompt=variant, n_ctx=2, depth=9, vision_placement="after_ln_pre")
        after.load_prompt_state_dict(model.prompt_state_dict())
        other = after(images)
    assert model.vision_placement == "before_ln_pre"  # the default follows the reference code
    assert (ours - ref).abs().max().item() < 1e-4
    # the other placement is another model, so this test can fail (random weights: logits are small)
    assert (other - ref).abs().max().item() > 100 * (ours - ref).abs().max().item() + 1e-3


def test_vision_placement_is_checked(tiny_clip, classnames):
    with pytest.raises(ValueError, match="valid choices: before_ln_pre, after_ln_pre"):
        PromptedCLIP(tiny_clip, classnames, prompt="maple", depth=2, vision_placement="inside")


def test_variant_table_drives_the_parameters(tiny_clip, classnames):
    for name, v in capt.prompts.VARIANTS.items():
        model = PromptedCLIP(tiny_clip, classnames, prompt=name, n_ctx=2, depth=2)
        assert (model.ctx is not None) == v.learns_text
        assert (model.text_deep is not None) == (v.text == "deep")
        assert (model.vision_ctx is not None) == (v.vision == "deep")
        assert (model.couplers is not None) == (v.vision == "coupled")


@pytest.mark.parametrize("method", list(capt.METHODS))
def test_a_method_builds_its_own_model(tiny_clip, classnames, method):
    m = capt.get_method(method)
    model = m.build(tiny_clip, classnames, n_ctx=2, depth=2, templates=["a photo of a {}.", "a {}."])
    assert model.prompt == m.prompt and model.templates == ["a photo of a {}.", "a {}."]
    assert model.depth == (2 if capt.prompts.VARIANTS[m.prompt].deep else model.depth)
