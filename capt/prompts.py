"""PromptedCLIP: learnable deep prompts injected into any open_clip ViT CLIP.

The prompt variants are one table, :data:`VARIANTS` (CAPT_SPEC.md, "Prompts"), read by the model, the
methods and the sweep's cost model:

=========  ===========================================================================
``none``   hand-crafted template, no parameters (zero-shot CLIP)
``text``   CoOp-style shallow context: ``n_ctx`` learned token embeddings after SOT
``vision`` deep VPT: ``n_ctx`` learned tokens appended to the vision sequence of the first
           ``depth`` layers (replaced at each of them)
``ivlp``   independent deep prompts in both towers (text and vision learned separately)
``maple``  coupled deep prompts: deep text prompts in the first ``depth`` layers; the vision
           prompts of each layer are a per-layer linear map (text width -> vision width) of
           that layer's text prompts
=========  ===========================================================================

Where the first layer's vision prompts enter (:data:`VISION_PLACEMENTS`): ``before_ln_pre`` (default)
appends them to the patch + class embeddings before the vision tower's pre-transformer LayerNorm, as the
reference code of VPT, IVLP and MaPLe does; ``after_ln_pre`` appends them after it (this library's
placement before issue 16, kept for the ablation). Deeper layers' prompts replace the prompt slots at
the input of their block, un-normalised, in both placements.

Images enter in ``[0, 1]`` pixel space; the model's own normaliser runs inside. The wrapped CLIP is
frozen and shared: the zero-shot teacher (``frozen_logits``) runs the same weight tensors with no prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_choice, check_number



@dataclass(frozen=True)
class PromptVariant:
    """Which towers learn prompts, and how: ``text`` is ``none``, ``shallow`` (first layer only) or
    ``deep``; ``vision`` is ``none``, ``deep`` (its own parameters) or ``coupled`` (a per-layer linear
    map of the text prompts, MaPLe)."""

    name: str
    text: str
    vision: str
    description: str

    @property
    def learns_text(self) -> bool:
        return self.text != "none"

    @property
    def learns_vision(self) -> bool:
        return self.vision != "none"

    @property
    def deep(self) -> bool:
        """Whether ``depth`` applies (prompts in the first ``depth`` layers of some tower)."""
        return self.text == "deep" or self.learns_vision


VARIANTS: dict[str, PromptVariant] = {v.name: v for v in [
    PromptVariant("none", "none", "none", "hand-crafted template, no parameters (zero-shot CLIP)"),
    PromptVariant("text", "shallow", "none", "CoOp: shallow learned text context after SOT"),
    PromptVariant("vision", "none", "deep", "VPT-deep: learned vision tokens in the first depth layers"),
    PromptVariant("ivlp", "deep", "deep", "independent deep prompts in both towers"),
    PromptVariant("maple", "deep", "coupled", "MaPLe: deep text prompts, vision prompts a linear map of them"),
]}
PROMPT_VARIANTS = tuple(VARIANTS)
# The prompt's shape by default (the paper's: two context tokens from "a photo of a", nine layers deep): one
# home, read by PromptedCLIP, Method.build and the settings' defaults.
N_CTX, DEPTH, CTX_INIT = 2, 9, "a photo of a"
VISION_PLACEMENTS = ("before_ln_pre", "after_ln_pre")


def prompt_variant(name: str) -> PromptVariant:
    check_choice("prompt variant", name, VARIANTS)
    return VARIANTS[name]
_PLACEHOLDER = "X"


class _TextTower:
    """The pieces of an open_clip text transformer, whether it lives on ``CLIP`` or ``CustomTextCLIP.text``."""

    def __init__(self, clip: nn.Module):
        t = clip.text if hasattr(clip, "text") and not hasattr(clip, "token_embedding") else clip
        missing = [a for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")
                   if not hasattr(t, a)]
        if missing or getattr(t, "cls_emb", None) is not None:
            raise ValueError(
                f"PromptedCLIP needs an open_clip text transformer (missing {missing or ['support for cls_emb']}); "
                "Hugging Face text towers are not supported")
        self.module = t
        self.token_embedding = t.token_embedding
        self.positional_embedding = t.positional_embedding
        self.transformer = t.transformer
        self.ln_final = t.ln_final
        self.text_projection = t.text_projection
        self.pool_type = getattr(t, "text_pool_type", getattr(t, "pool_type", "argmax"))
        self.eos_id = getattr(t, "text_eos_id", getattr(t, "eos_id", None))

    @property
    def attn_mask(self):
        return self.module.attn_mask

    def deciding_length(self, tokens: torch.Tensor) -> int:
        """How many leading tokens decide the pooled features of ``tokens``: under a causal mask a token
        sees only those before it, so everything after the pooled (end-of-text) token is dead work.
        The full context length where the tower is not causal or pools another way."""
        n = tokens.shape[1]
        mask = self.attn_mask
        future = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
        causal = mask is not None and mask.shape == (n, n) and torch.equal(torch.isneginf(mask), future)
        if not causal or self.pool_type not in ("argmax", "eos"):
            return n
        pooled = tokens.argmax(-1) if self.pool_type == "argmax" else (tokens == self.eos_id).int().argmax(-1)
        return int(pooled.max()) + 1

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    @property
    def layers(self) -> int:
        return len(self.transformer.resblocks)


def _vision_checks(visual: nn.Module) -> None:
    needed = ("_embeds", "_pool", "transformer", "proj")
    missing = [a for a in needed if not hasattr(visual, a)]
    if missing:
        raise ValueError(f"PromptedCLIP needs an open_clip VisionTransformer (missing {missing}); "
                         "ResNet and timm towers are not supported")
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError("vision towers with attentional pooling are not supported by PromptedCLIP")


def _run_blocks(transformer: nn.Module, x: torch.Tensor, deep: Sequence[torch.Tensor] | None,
                at_end: bool, n_ctx: int, attn_mask=None) -> torch.Tensor:
    """Run the residual blocks, replacing the prompt slots with layer ``i``'s prompts for 1 <= i <= len(deep).

    ``x`` is batch-first. Prompt slots are the ``n_ctx`` tokens after the first one (text) or the last
    ``n_ctx`` tokens (vision, ``at_end=True``).
    """
    batch_first = getattr(transformer, "batch_first", True)
    for i, block in enumerate(transformer.resblocks):
        if deep is not None and 1 <= i <= len(deep):
            p = deep[i - 1].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :-n_ctx], p], dim=1) if at_end else torch.cat([x[:, :1], p, x[:, 1 + n_ctx:]], dim=1)
        if batch_first:
            x = block(x, attn_mask=attn_mask)
        else:  # older open_clip: sequence-first blocks
            x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return x


class PromptedCLIP(nn.Module):
    """A frozen open_clip ViT CLIP with learnable prompts, classifying ``classnames``.

    Args:
        clip: a :class:`capt.models.ClipBundle` (from :func:`capt.load_clip`).
        classnames: the class names of the task.
        prompt: one of ``none``, ``text``, ``vision``, ``ivlp``, ``maple``.
        n_ctx: number of learned context tokens (per layer, per tower).
        depth: number of layers (from the first) that receive prompts; ignored by ``text`` (shallow) and ``none``.
        ctx_init: text whose first ``n_ctx`` token embeddings initialise the text context, and which
            stays as the fixed rest of the prompt (MaPLe); ``None`` uses random context and placeholders.
        template: hand-crafted template(s) for the ``none`` variant and the frozen teacher; several
            templates are averaged (CLIP's prompt ensembling).
        init_std: standard deviation of the random initialisation of prompt vectors.
        truncate_text: run the learnable text prompts and the hand-crafted templates through only the
            tokens that decide their pooled feature (up to the last end-of-text token) when the text
            tower is causal, instead of the whole context (77 tokens for OpenAI CLIP). The same features
            up to float rounding, and several times less text-tower work per training step and model
            build; ``False`` runs the full context.
        vision_placement: where the first layer's vision prompts join the sequence: ``before_ln_pre``
            (VPT/IVLP/MaPLe reference code) or ``after_ln_pre``; see :data:`VISION_PLACEMENTS`.
    """

    def __init__(self, clip, classnames: Sequence[str], prompt: str = "maple", n_ctx: int = N_CTX,
                 depth: int = DEPTH, ctx_init: str | None = CTX_INIT,
                 template: str | Sequence[str] = "a photo of a {}.", init_std: float = 0.02,
                 truncate_text: bool = True, vision_placement: str = "before_ln_pre"):
        super().__init__()
        variant = prompt_variant(prompt)
        check_choice("vision prompt placement", vision_placement, VISION_PLACEMENTS)
        if isinstance(classnames, str) or len(classnames) == 0:
            raise ValueError("classnames must be a non-empty list of class names")
        check_number("n_ctx", n_ctx, low=1, integer=True)
        check_number("depth", depth, low=1, integer=True)
        templates = [template] if isinstance(template, str) else list(template)
        if not templates or any("{}" not in t for t in templates):
            raise ValueError("template must contain '{}' where the class name goes, e.g. 'a photo of a {}.'")

        model = clip.model
        self.clip = model  # frozen, shared with the teacher; never copied
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.normalize = clip.normalize
        self.tokenizer = clip.tokenizer
        self.classnames = [str(c).replace("_", " ") for c in classnames]
        self.prompt = prompt
        self.variant = variant
        self.vision_placement = vision_placement
        self.n_ctx = n_ctx
        self.templates = templates
        self._text = _TextTower(model)
        _vision_checks(model.visual)
        self.text_width = self._text.width
        self.vision_width = model.visual.conv1.out_channels
        self.text_layers = self._text.layers
        self.vision_layers = len(model.visual.transformer.resblocks)

        deep_text = variant.text == "deep"
        limit = min(self.text_layers if deep_text else 10**9, self.vision_layers if variant.learns_vision else 10**9)
        if variant.deep and depth > limit:
            raise ValueError(f"depth={depth} is larger than the encoder ({limit} layers) for prompt={prompt!r}; "
                             f"use 1 <= depth <= {limit}")
        self.depth = depth if variant.deep else (1 if variant.learns_text else 0)

        # Token ids of the learnable prompt "ctx_init classname." and of the hand-crafted templates.
        ctx_ids = None
        if variant.learns_text:
            prefix = ctx_init if ctx_init else " ".join([_PLACEHOLDER] * n_ctx)
            prefix_len = self._count_tokens(prefix)
            if prefix_len < n_ctx:
                prefix = " ".join([prefix] + [_PLACEHOLDER] * (n_ctx - prefix_len))
            tokens = self._tokenize([f"{prefix} {c}." for c in self.classnames])
            if truncate_text:
                tokens = tokens[:, :self._text.deciding_length(tokens)]
            self.register_buffer("prompt_tokens", tokens, persistent=False)
            with torch.no_grad():
                emb = self._text.token_embedding(self.prompt_tokens)
            self.register_buffer("prompt_embedding", emb, persistent=False)  # frozen token embeddings
            if ctx_init:
                ctx_ids = self._tokenize([prefix])[0, 1:1 + n_ctx]
        template_tokens = self._tokenize([t.format(c) for t in templates for c in self.classnames])
        if truncate_text:  # the frozen teacher's features too: every model build encodes them once
            template_tokens = template_tokens[:, :self._text.deciding_length(template_tokens)]
        self.register_buffer("template_tokens", template_tokens, persistent=False)

        def vec(n, width, init=None):
            if init is not None:
                return nn.Parameter(init.clone())
            return nn.Parameter(torch.randn(n, width) * init_std)

        dev = self.clip.logit_scale.device
        self.ctx = None
        self.text_deep = None
        self.vision_ctx = None
        self.vision_deep = None
        self.couplers = None
        if variant.learns_text:
            init = None
            if ctx_ids is not None:
                with torch.no_grad():
                    init = self._text.token_embedding(ctx_ids.to(dev))
            self.ctx = vec(n_ctx, self.text_width, init)
        if deep_text:
            self.text_deep = nn.ParameterList([vec(n_ctx, self.text_width) for _ in range(self.depth - 1)])
        if variant.vision == "deep":
            self.vision_ctx = vec(n_ctx, self.vision_width)
            self.vision_deep = nn.ParameterList([vec(n_ctx, self.vision_width) for _ in range(self.depth - 1)])
        if variant.vision == "coupled":
            self.couplers = nn.ModuleList([nn.Linear(self.text_width, self.vision_width) for _ in range(self.depth)])
        self.to(dev)

        with torch.no_grad():  # the teacher's text side never changes: compute it once
            self.register_buffer("frozen_text_features", self._encode_template_text(), persistent=False)

    # ------------------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.clip.logit_scale.device)

    def _count_tokens(self, text: str) -> int:
        ids = self.tokenizer([text])[0]
        eot = int(ids.argmax())  # open_clip convention: EOT has the largest id
        return eot - 1

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen weights: no dropout/batch statistics change, whatever the mode
        return self

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("clip.")]

    def prompt_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the learned prompts (what checkpoints store); the frozen CLIP is never saved."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if not n.startswith("clip.")}

    def load_prompt_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = dict((n, p) for n, p in self.named_parameters() if not n.startswith("clip."))
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            raise ValueError(
                "prompt checkpoint does not fit this model: it was saved for another prompt variant, "
                "n_ctx, depth or architecture (expected "
                f"{ {k: tuple(v.shape) for k, v in own.items()} }, got { {k: tuple(v.shape) for k, v in state.items()} })")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k])

    def num_prompt_parameters(self) -> int:
        return sum(p.numel() for p in self.prompt_parameters())

    # -- text ------------------------------------------------------------------------------------
    def _text_forward(self, x: torch.Tensor, tokens: torch.Tensor, deep) -> torch.Tensor:
        t = self._text
        n = x.shape[1]  # the whole context, or its deciding prefix (truncate_text)
        mask = t.attn_mask[:n, :n] if t.attn_mask is not None else None
        x = x + t.positional_embedding[:n].to(x.dtype)
        x = _run_blocks(t.transformer, x, deep, at_end=False, n_ctx=self.n_ctx, attn_mask=mask)
        x = t.ln_final(x)
        from open_clip.transformer import text_global_pool

        x = text_global_pool(x, tokens, t.pool_type, eos_token_id=t.eos_id)
        if t.text_projection is not None:
            x = t.text_projection(x) if isinstance(t.text_projection, nn.Linear) else x @ t.text_projection
        return x

    def _encode_template_text(self) -> torch.Tensor:
        tokens = self.template_tokens
        f = F.normalize(self._text_forward(self._text.token_embedding(tokens), tokens, None), dim=-1)
        f = f.view(len(self.templates), len(self.classnames), -1).mean(0)
        return F.normalize(f, dim=-1)

    def encode_text(self) -> torch.Tensor:
        """L2-normalised class text features ``(C, D)`` for the current prompts (differentiable)."""
        if self.ctx is None:
            return self.frozen_text_features
        emb = self.prompt_embedding
        ctx = self.ctx.to(emb.dtype).unsqueeze(0).expand(emb.shape[0], -1, -1)
        x = torch.cat([emb[:, :1], ctx, emb[:, 1 + self.n_ctx:]], dim=1)
        return F.normalize(self._text_forward(x, self.prompt_tokens, self.text_deep), dim=-1)

    # -- vision ----------------------------------------------------------------------------------
    def _vision_prompts(self) -> list[torch.Tensor] | None:
        if self.variant.vision == "deep":
            return [self.vision_ctx, *self.vision_deep]
        if self.variant.vision == "coupled":
            return [c(p) for c, p in zip(self.couplers, [self.ctx, *self.text_deep])]
        return None

    def _image_forward(self, images: torch.Tensor, prompts: list[torch.Tensor] | None) -> torch.Tensor:
        v = self.clip.visual
        if prompts is None or self.vision_placement == "after_ln_pre":
            x = v._embeds(self.normalize(images))
            if prompts is not None:
                x = torch.cat([x, self._expand(prompts[0], x)], dim=1)
        else:  # open_clip's _embeds with the prompts joining before ln_pre (VPT/IVLP/MaPLe reference code)
            x = v.conv1(self.normalize(images))
            x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
            cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
            x = v.patch_dropout(x)  # identity in eval mode; the frozen CLIP always runs in eval mode
            x = v.ln_pre(torch.cat([x, self._expand(prompts[0], x)], dim=1))
        x = _run_blocks(v.transformer, x, prompts[1:] if prompts else None, at_end=True, n_ctx=self.n_ctx)
        if prompts is not None:
            x = x[:, :-self.n_ctx]  # prompt tokens are discarded before pooling (VPT)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled

    @staticmethod
    def _expand(prompt: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return prompt.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features ``(B, D)`` of ``[0, 1]`` images, with the current prompts."""
        return F.normalize(self._image_forward(images, self._vision_prompts()), dim=-1)

    # -- logits ----------------------------------------------------------------------------------
    def logits_from_features(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        logits = self.clip.logit_scale.exp() * image_features @ text_features.to(image_features.dtype).t()
        bias = getattr(self.clip, "logit_bias", None)
        return logits + bias if bias is not None else logits

    def forward(self, images: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``exp(logit_scale) * cos(image, class text)`` of ``(B, 3, H, W)`` images in ``[0, 1]``."""
        if text_features is None:
            text_features = self.encode_text()
        return self.logits_from_features(self.encode_image(images), text_features)

    @torch.no_grad()
    def frozen_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen pre-trained CLIP with the hand-crafted template(s): CAPT's teacher ``f0``."""
        image_features = F.normalize(self._image_forward(images, None), dim=-1)
        return self.logits_from_features(image_features, self.frozen_text_features)

    def extra_repr(self) -> str:
        return (f"prompt={self.prompt!r}, n_ctx={self.n_ctx}, depth={self.depth}, classes={len(self.classnames)}, "
                f"vision_placement={self.vision_placement!r}, trainable={self.num_prompt_parameters()}")
