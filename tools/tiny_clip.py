"""The tests' tiny CLIP: a small standard open_clip ViT with OpenAI's tokenizer and random weights (fast on
CPU). The test suite and the GPU check's CPU stand-in both build it here."""

from __future__ import annotations

import torch


def make_tiny_clip(image_size: int = 32, width: int = 64, layers: int = 3, embed_dim: int = 48, seed: int = 0,
                   **text_options):
    """A small standard open_clip ViT CLIP with OpenAI's tokenizer, random weights, frozen
    (``text_options``: further :class:`open_clip.model.CLIPTextCfg` fields, e.g. ``no_causal_mask=True``)."""
    import open_clip

    from capt.mini_model import MEAN, STD
    from capt.models import ClipBundle, Normalize, _freeze, _pixel_preprocess

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=embed_dim,
        vision_cfg=open_clip.model.CLIPVisionCfg(image_size=image_size, patch_size=8, width=width, layers=layers,
                                                 head_width=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=width - 16, heads=3,
                                             layers=layers, **text_options),
    )
    _freeze(model)
    return ClipBundle(model=model, preprocess=_pixel_preprocess(image_size), normalize=Normalize(MEAN, STD),
                      tokenizer=open_clip.get_tokenizer("ViT-B-32"), name="tiny", pretrained=None,
                      image_size=image_size)
