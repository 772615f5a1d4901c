"""Methods registry: a method is a prompt variant + a training objective + the attack it trains on.

Every method runs through the same trainer (:func:`capt.train.train`) and evaluator; they differ only
in the data below. :meth:`Method.build` assembles a method's model, so callers never pick the prompt
variant by hand.

Training attacks (:data:`TRAIN_ATTACKS`), both L-inf PGD with a uniform random start in the eps-ball,
step ``alpha * sign(grad)``, projected back to the ball and to ``[0, 1]``:

- ``pgd_ce``: maximises the cross-entropy of the true class (Madry et al.; AdvCoOp/APT, AdvVLP, AdvMaPLe).
- ``pgd_kl``: maximises ``KL(p(x) || p(x_a))``, the divergence of the adversarial prediction from the
  clean one, labels unused (TRADES' inner maximisation; FAP's public code trains on it,
  ``attack_pgd(..., train_trades=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

from .attacks import pgd
from .objectives import Objective, kl_per_sample
from .prompts import CTX_INIT, DEPTH, N_CTX
from .validation import check_choice, check_eps, check_number

TRAIN_ATTACKS = ("pgd_ce", "pgd_kl")


def pgd_kl(model, images: torch.Tensor, eps: float, alpha: float, steps: int, text_features: torch.Tensor,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD maximising ``KL(p(x) || p(x_a))`` (mean over the batch) from a uniform random start."""
    check_eps(eps)
    check_number("steps", steps, low=1, integer=True)
    x = images.detach()
    text_features = text_features.detach()
    with torch.no_grad():
        clean = model.logits_from_features(model.encode_image(x), text_features).float()
    noise = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device,
                       dtype=x.dtype).to(x.device)
    x_adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model.logits_from_features(model.encode_image(x_adv), text_features)
        (grad,) = torch.autograd.grad(kl_per_sample(logits, clean).sum(), x_adv)
        x_adv = torch.max(torch.min(x_adv.detach() + alpha * grad.sign(), upper), lower)
    return x_adv.detach()


@dataclass(frozen=True)
class Method:
    name: str
    prompt: str
    objective: Objective
    adversarial: bool  # generate training examples with the training attack
    description: str = ""
    train_attack: str = "pgd_ce"

    def __post_init__(self):
        from .prompts import prompt_variant

        prompt_variant(self.prompt)
        check_choice("training attack", self.train_attack, TRAIN_ATTACKS)

    @property
    def trains(self) -> bool:
        return self.objective.kind != "none"

    def with_objective(self, **changes) -> "Method":
        """A copy with some objective fields changed (``lam``, ``alpha_strategy``, ``ce_on``, ...): ablations."""
        valid = [f.name for f in fields(Objective) if f.name != "extra"]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ValueError(f"unknown objective setting(s) {', '.join(map(repr, unknown))} for method "
                             f"{self.name!r}; valid choices: {', '.join(valid)}")
        return replace(self, objective=replace(self.objective, **changes))

    def build(self, clip, classnames: Sequence[str], n_ctx: int = N_CTX, depth: int = DEPTH,
              ctx_init: str | None = CTX_INIT, templates: str | Sequence[str] = "a photo of a {}.",
              **options):
        """This method's :class:`capt.PromptedCLIP` on ``clip`` (a ClipBundle) for ``classnames``;
        ``options`` go to PromptedCLIP (``vision_placement``, ``truncate_text``, ``init_std``)."""
        from .prompts import PromptedCLIP

        templates = [templates] if isinstance(templates, str) else list(templates)
        return PromptedCLIP(clip, classnames, prompt=self.prompt, n_ctx=n_ctx, depth=depth, ctx_init=ctx_init,
                            template=templates, **options)

    def attack(self, model, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float, steps: int,
               text_features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training examples: ``images`` themselves for a clean method, else its training attack's."""
        if not self.adversarial:
            return images
        if self.train_attack == "pgd_kl":
            return pgd_kl(model, images, eps, alpha, steps, text_features, generator)
        return pgd(model, images, labels, eps=eps, alpha=alpha, steps=steps, text_features=text_features,
                   generator=generator)


# The table's order is the display order of every table and figure (baselines first, CAPT last).
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("zeroshot", "none", Objective("none"), False,
           "frozen CLIP with the hand-crafted template; no training"),
    Method("apt", "text", Objective("ce_adv"), True,
           "AdvCoOp/APT: unified shallow text context, class token at the end, CE on PGD-CE images. Differs "
           "from APT (Li et al., CVPR 2024): n_ctx from the profile (2, initialised from 'a photo of a'; APT "
           "uses 16) and the profile's training attack (APT: PGD-3 at 4/255 on a robust TeCoA backbone)"),
    Method("advvpt", "vision", Objective("ce_adv"), True,
           "AdvVPT: deep visual prompts (VPT) trained with CE on PGD-CE images"),
    Method("advvlp", "ivlp", Objective("ce_adv"), True,
           "AdvVLP: independent deep vision and text prompts trained with CE on PGD-CE images"),
    Method("advmaple", "maple", Objective("ce_adv"), True,
           "AdvMaPLe: MaPLe-coupled deep prompts trained with CE on PGD-CE images"),
    Method("trades_maple", "maple", Objective("trades", lam=1.5, ce_on="clean"), True,
           "TRADES-MaPLe: MaPLe prompts, CE on clean + lambda * KL(clean || adv), trained on PGD-CE images "
           "(this library's 'fap' before issue 16)"),
    Method("fap", "maple", Objective("fap", lam=1.5, ce_on="clean"), True,
           "FAP (Zhou et al., NeurIPS 2024): CE on clean + lambda * KL(clean || adv) * (1 + cos(clean, adv "
           "image features)), trained on PGD-KL images. Differs from FAP's code: MaPLe's text-to-vision "
           "coupling at every layer (FAP maps deeper layers' vision prompts to text)", "pgd_kl"),
    Method("capt", "maple", Objective("capt", lam=1.5, alpha_strategy="frozen_confidence", ce_on="clean"), True,
           "CAPT: CE on clean + lambda * adaptive mix of self- and frozen-teacher consistency"),
]}


def method_names() -> list[str]:
    return list(METHODS)


def method_order(values) -> list:
    """``values`` (method names) in the table's order; unknown names last, in their given order."""
    present = list(dict.fromkeys(values))
    return [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]


def get_method(name: str, **objective_changes) -> Method:
    """The registered method ``name``; keyword arguments override its objective (``lam=0.5``, ...)."""
    check_choice("method", name, METHODS)
    method = METHODS[name]
    return method.with_objective(**objective_changes) if objective_changes else method
