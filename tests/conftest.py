"""Shared fixtures: a tiny random-init open_clip CLIP (fast on CPU) and small image batches."""

from __future__ import annotations

import os

import pytest
import torch

# One intra-op thread per pytest-xdist worker (the root conftest.py sets OMP_NUM_THREADS), two otherwise.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


def make_tiny_clip(image_size: int = 32, width: int = 64, layers: int = 3, embed_dim: int = 48, seed: int = 0,
                   **text_options):
    """A small standard open_clip ViT CLIP with OpenAI's tokenizer, random weights, frozen
    (``text_options``: further :class:`open_clip.model.CLIPTextCfg` fields, e.g. ``no_causal_mask=True``)."""
    import open_clip

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
    return ClipBundle(model=model, preprocess=_pixel_preprocess(image_size),
                      normalize=Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
                      tokenizer=open_clip.get_tokenizer("ViT-B-32"), name="tiny", pretrained=None,
                      image_size=image_size)


# A run on the mini CLIP (a RunSpec names its model and prompt shape: they have no library default).
MINI_RUN = dict(model="mini", pretrained=None, n_ctx=2, depth=3, ctx_init="a photo of a")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on two busy cores, two threads per process slow small models
    down many times (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_clip():
    return make_tiny_clip()


@pytest.fixture(scope="session")
def classnames():
    return ["cat", "dog", "car", "tree", "boat"]


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=g)
    labels = torch.randint(0, 5, (8,), generator=g)
    return images, labels
