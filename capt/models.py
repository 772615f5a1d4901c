"""Load a CLIP: an open_clip name + pretrained tag, a local checkpoint, random init, or the mini model.

Every path returns a :class:`ClipBundle` whose ``preprocess`` stops at a ``[0, 1]`` tensor: the
normalisation is a separate module (``normalize``) that :class:`capt.PromptedCLIP` applies inside
its forward pass, so attacks can work in pixel space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

MINI_NAME = "mini"


class Normalize(nn.Module):
    """Channel-wise ``(x - mean) / std`` for ``(B, 3, H, W)`` tensors; moves with the model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


@dataclass
class ClipBundle:
    """A frozen CLIP and what it needs: ``model``, ``preprocess`` (PIL -> [0,1] tensor, no
    normalisation), ``normalize`` (module), ``tokenizer`` (texts -> token ids)."""

    model: nn.Module
    preprocess: Callable
    normalize: Normalize
    tokenizer: Callable
    name: str
    pretrained: str | None
    image_size: int

    def __repr__(self) -> str:
        return f"ClipBundle(name={self.name!r}, pretrained={self.pretrained!r}, image_size={self.image_size})"


def _is_path_like(pretrained: str) -> bool:
    return any(s in pretrained for s in ("/", "\\")) or pretrained.endswith(
        (".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def wants_quick_gelu(name: str, pretrained: str | None) -> bool:
    """Whether OpenAI's weights are meant, which were trained with QuickGELU: the ``openai`` tag, or a local
    file whose path names ``openai`` (open_clip's own cache keeps them under such a name, e.g.
    ``.../vit_base_patch32_clip_224.openai/open_clip_pytorch_model.bin``). A ``-quickgelu`` model has it already."""
    if pretrained is None or name.endswith("-quickgelu"):
        return False
    return pretrained == "openai" or (_is_path_like(pretrained) and "openai" in str(pretrained).lower())


def _pixel_preprocess(size: int) -> Callable:
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.Lambda(lambda im: im.convert("RGB")),
        T.ToTensor(),
    ])


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_clip(name: str = MINI_NAME, pretrained: str | None = None, *, device: str | torch.device = "cpu",
              checkpoint: str | Path | None = None, cache_dir: str | None = None,
              quick_gelu: bool | None = None) -> ClipBundle:
    """Load a frozen CLIP.

    - ``load_clip("mini")``: the embedded mini CLIP pretrained on the mini world (offline).
    - ``load_clip("ViT-B-32", pretrained="openai")``: open_clip weights by tag (needs the file in
      open_clip's cache, or network). QuickGELU is forced for ``openai`` weights, as they were trained with it.
    - ``load_clip("ViT-B-32", pretrained="/path/to/weights.pt")`` or ``checkpoint=...``: a local file,
      loaded with ``weights_only=True``; QuickGELU when its path names ``openai`` (:func:`wants_quick_gelu`).
    - ``quick_gelu``: force QuickGELU on (``True``) or off (``False``) whatever the weights; ``None`` decides
      as above.
    - ``load_clip("ViT-S-32", pretrained=None)``: random initialisation (tests).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string such as 'mini' or 'ViT-B-32', got {name!r}")
    if name == MINI_NAME:
        return _load_mini(checkpoint if checkpoint is not None else pretrained, device)

    import open_clip

    if name not in open_clip.list_models():
        raise ValueError(
            f"unknown model {name!r}; use 'mini' or an open_clip model name such as "
            f"{', '.join(m for m in open_clip.list_models() if m.startswith('ViT-B'))[:200]}..."
        )
    if checkpoint is not None:
        pretrained = str(checkpoint)
    kwargs = {}
    if pretrained is not None:
        if _is_path_like(pretrained) and not Path(pretrained).is_file():
            raise FileNotFoundError(
                f"checkpoint file {pretrained} does not exist; pass the path of a local open_clip "
                "state dict (e.g. open_clip_pytorch_model.bin) or an open_clip pretrained tag"
            )
    if quick_gelu if quick_gelu is not None else wants_quick_gelu(name, pretrained):
        kwargs["force_quick_gelu"] = True  # OpenAI's weights were trained with QuickGELU
    try:
        model, _, preprocess_val = open_clip.create_model_and_transforms(
            model_name=name, pretrained=pretrained, device=device, cache_dir=cache_dir,
            weights_only=True, **kwargs)
    except Exception as exc:
        if pretrained is None or _is_path_like(pretrained):
            raise
        raise RuntimeError(
            f"could not obtain the {name!r} weights tagged {pretrained!r} ({type(exc).__name__}: {exc}). "
            "Without network access, download them on a connected machine "
            f"(open_clip.create_model('{name}', pretrained='{pretrained}', cache_dir=DIR)) and either copy "
            f"DIR here and pass cache_dir=DIR, or pass the weights file itself: "
            f"capt.load_clip('{name}', pretrained='/path/to/open_clip_pytorch_model.bin')"
        ) from exc
    _freeze(model)
    tokenizer = open_clip.get_tokenizer(name)
    from torchvision import transforms as T

    norm = [t for t in preprocess_val.transforms if isinstance(t, T.Normalize)]
    if len(norm) != 1:
        raise RuntimeError(f"expected one Normalize in open_clip's preprocessing for {name}, found {len(norm)}")
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    preprocess = T.Compose([t for t in preprocess_val.transforms if not isinstance(t, T.Normalize)])
    return ClipBundle(model=model, preprocess=preprocess, normalize=Normalize(norm[0].mean, norm[0].std).to(device),
                      tokenizer=tokenizer, name=name, pretrained=pretrained, image_size=size)


def _load_mini(path, device) -> ClipBundle:
    from capt.mini_model import load_mini

    loaded = load_mini(path)
    model = _freeze(loaded["model"]).to(device)
    size = int(loaded["image_size"])
    return ClipBundle(model=model, preprocess=_pixel_preprocess(size),
                      normalize=Normalize(loaded["mean"], loaded["std"]).to(device),
                      tokenizer=loaded["tokenizer"], name=MINI_NAME, pretrained=str(path) if path else None,
                      image_size=size)
