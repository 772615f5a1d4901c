"""Adversarial attacks in ``[0, 1]`` pixel space, and adapters to torchattacks.

Within one attack only the image changes: the class text features are computed once per batch and
reused at every step (``capt`` PGD), which makes a K-step attack cost about K image-tower
forward+backward passes. torchattacks' attacks drive a :class:`FixedTextClassifier` that does the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_choice, check_eps, check_number

LOSSES = ("ce", "cw")
ATTACKS = ("clean", "noise", "pgd", "cw_pgd", "ta_pgd", "apgd", "apgdt", "cw", "autoattack")


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, kappa: float = float("inf")) -> torch.Tensor:
    """CW margin per sample: ``max_{j != y} z_j - z_y`` (clipped at ``kappa``); larger = more wrong."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (other - true).clamp(max=kappa)


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "ce":
        return lambda z, y: F.cross_entropy(z, y, reduction="sum")
    return lambda z, y: margin_loss(z, y).sum()


def _check_images(images: torch.Tensor, labels: torch.Tensor, model=None) -> None:
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError("images must be a float tensor of shape (B, 3, H, W) with values in [0, 1]")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("images must lie in [0, 1] pixel space (normalisation happens inside the model)")
    if not torch.is_tensor(labels) or labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError("labels must be a 1-D integer tensor of class indices")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    size = getattr(getattr(getattr(model, "clip", None), "visual", None), "image_size", None)
    if isinstance(size, (tuple, list)) and tuple(images.shape[-2:]) != tuple(size):
        raise ValueError(f"images are {images.shape[-2]}x{images.shape[-1]} but the model takes {size[0]}x{size[1]}; "
                         "prepare them with the model's preprocess (ClipBundle.preprocess)")


def pgd(model, images: torch.Tensor, labels: torch.Tensor, eps: float = 1 / 255, alpha: float | None = None,
        steps: int = 10, loss: str = "ce", random_start: bool = True, text_features: torch.Tensor | None = None,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD (Madry et al.) against ``model`` (a :class:`capt.PromptedCLIP`), maximising ``loss``.

    ``alpha`` defaults to ``eps / 4``. ``text_features`` (computed once if not given) are detached:
    the attack changes only the image. Returns ``x_adv`` with ``|x_adv - x|_inf <= eps`` and
    ``x_adv`` in ``[0, 1]``; the model's train/eval mode and parameters are untouched.
    """
    check_eps(eps)
    check_number("steps", steps, low=1, integer=True)
    alpha = eps / 4 if alpha is None else alpha
    check_number("alpha (PGD step size)", alpha, low=0)
    check_choice("attack loss", loss, LOSSES)
    _check_images(images, labels, model)
    x = images.detach()
    if eps == 0:
        return x.clone()
    if text_features is None:
        with torch.no_grad():
            text_features = model.encode_text()
    text_features = text_features.detach()
    if labels.numel() and (labels.min() < 0 or labels.max() >= text_features.shape[0]):
        raise ValueError(f"labels must be class indices in [0, {text_features.shape[0] - 1}], "
                         f"got values from {int(labels.min())} to {int(labels.max())}")
    loss_fn = _loss_fn(loss)
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device,
                           dtype=x.dtype).to(x.device)
        x_adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    else:
        x_adv = x.clone()
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model.logits_from_features(model.encode_image(x_adv), text_features)
        (grad,) = torch.autograd.grad(loss_fn(logits.float(), labels), x_adv)
        x_adv = torch.max(torch.min(x_adv.detach() + alpha * grad.sign(), upper), lower)
    return x_adv.detach()


def uniform_noise(images: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random sign-free uniform noise in the same L-inf ball: the baseline a real attack must beat."""
    check_eps(eps)
    noise = torch.rand(images.shape, generator=generator, device=generator.device if generator else images.device,
                       dtype=images.dtype).to(images.device)
    return (images + (2 * noise - 1) * eps).clamp(0, 1)


class FixedTextClassifier(nn.Module):
    """``images -> logits`` with the class text features frozen at construction (for torchattacks)."""

    def __init__(self, model, text_features: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        with torch.no_grad():
            tf = model.encode_text() if text_features is None else text_features
        self.register_buffer("text_features", tf.detach(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.logits_from_features(self.model.encode_image(images), self.text_features)


@dataclass(frozen=True)
class AttackSpec:
    """One evaluation attack: ``name`` in :data:`ATTACKS`, L-inf ``eps``, ``steps`` and step ``alpha``
    (``None``: eps/4). ``clean`` ignores the rest. ``autoattack`` chains torchattacks' APGD-CE, APGD-T
    (9 target classes), FAB-T (9 targets), each with ``steps`` iterations (100 by default), and Square
    with 5000 queries: the reference "standard" settings, run by torchattacks' implementations."""

    name: str
    eps: float = 1 / 255
    steps: int = 100
    alpha: float | None = None
    options: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        check_choice("attack", self.name, ATTACKS)
        check_eps(self.eps)
        check_number("steps", self.steps, low=1, integer=True)
        if self.alpha is not None:
            check_number("alpha (PGD step size)", self.alpha, low=0)

    @property
    def label(self) -> str:
        if self.name == "clean":
            return "clean"
        return f"{self.name}-{self.steps}" if self.name in ("pgd", "cw_pgd", "ta_pgd", "apgd", "apgdt") else self.name


def make_attack(spec: AttackSpec, model, num_classes: int | None = None, seed: int = 0,
                cache_text: bool = True, text_features: torch.Tensor | None = None,
                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``attack(images, labels) -> x_adv`` for ``spec``; the same call for capt's and torchattacks' attacks.

    ``text_features`` (computed once here if not given) are reused for every batch and step.
    ``cache_text=False`` lets torchattacks drive the :class:`PromptedCLIP` itself (recomputing text
    features at every step), which the benchmark compares against.
    """
    if text_features is None and cache_text and spec.name not in ("clean", "noise"):
        with torch.no_grad():
            text_features = model.encode_text()
    alpha = spec.eps / 4 if spec.alpha is None else spec.alpha
    gen_device = model.clip.logit_scale.device
    if spec.name == "clean":
        return lambda x, y: x
    if spec.name == "noise":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return lambda x, y: uniform_noise(x, spec.eps, generator=gen)
    if spec.name in ("pgd", "cw_pgd"):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        loss = "ce" if spec.name == "pgd" else "cw"

        def run(x, y):
            return pgd(model, x, y, eps=spec.eps, alpha=alpha, steps=spec.steps, loss=loss,
                       text_features=text_features, generator=gen)

        return run
    classifier = FixedTextClassifier(model, text_features) if cache_text else model
    return _torchattacks(spec, classifier, model, alpha, num_classes, seed, gen_device)


def _torchattacks(spec: AttackSpec, classifier, model, alpha, num_classes, seed, device):
    import torchattacks

    n_classes = num_classes or len(model.classnames)
    if spec.name == "ta_pgd":
        atk = torchattacks.PGD(classifier, eps=spec.eps, alpha=alpha, steps=spec.steps, random_start=True)
    elif spec.name == "apgd":
        atk = torchattacks.APGD(classifier, norm="Linf", eps=spec.eps, steps=spec.steps, loss="ce",
                                n_restarts=1, seed=seed)
    elif spec.name == "apgdt":
        atk = torchattacks.APGDT(classifier, norm="Linf", eps=spec.eps, steps=spec.steps, n_restarts=1,
                                 n_classes=n_classes, seed=seed)
    elif spec.name == "cw":
        # torchattacks' CW is the L2 Carlini-Wagner attack (no eps); "cw_pgd" is the L-inf CW-margin PGD.
        atk = torchattacks.CW(classifier, c=spec.options.get("c", 1.0), kappa=0, steps=spec.steps,
                              lr=spec.options.get("lr", 0.01))
    elif spec.name == "autoattack":
        # Assembled from torchattacks' parts with the reference "standard" settings: torchattacks' own
        # AutoAttack class runs 10 steps and all n-1 target classes, the reference 100 steps and 9 targets.
        targets = min(9, n_classes - 1)
        common = dict(norm="Linf", eps=spec.eps, n_restarts=1, seed=seed)
        apgdt = torchattacks.APGDT(classifier, steps=spec.steps, n_classes=n_classes, **common)
        fabt = torchattacks.FAB(classifier, steps=spec.steps, multi_targeted=True, n_classes=n_classes, **common)
        apgdt.n_target_classes = fabt.n_target_classes = targets
        atk = torchattacks.MultiAttack([
            torchattacks.APGD(classifier, steps=spec.steps, loss="ce", **common), apgdt, fabt,
            torchattacks.Square(classifier, n_queries=spec.options.get("n_queries", 5000), **common)])
    else:  # pragma: no cover - AttackSpec validates names
        raise ValueError(spec.name)

    devices = [x for x in [device] if torch.device(x).type == "cuda"]

    def run(x, y):
        # torchattacks draws its random starts from the global generator: seed it without leaking.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return atk(x, y).detach()

    return run
