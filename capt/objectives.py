"""Training objectives: CE on adversarial images, TRADES-style KL, FAP's, and CAPT's adaptive consistency.

FAP (Zhou et al., NeurIPS 2024, "Few-Shot Adversarial Prompt Learning on Vision-Language Models"; its
public code, lionel-w2/FAP, ``trainers/fap.py``, ``ADV_TERM=cos``)::

    L_FAP = CE(p_theta(x), y) + lambda * mean_i[ KL(p_theta(x_i) || p_theta(x_a,i)) * (1 + cos(f(x_i), f(x_a,i))) ]

with ``f`` the (normalised) image features of the prompted model: the consistency of the two
predictions, weighted by how alike the two image features are, so that minimising it also pushes the
adversarial image feature away from the clean one (its "uni-modal adversarial-aware" term). Gradients
flow through every factor (the weight is not detached), as in the reference code.

CAPT (CAPT_SPEC.md)::

    L_CAPT     = CE(p_theta(x), y) + lambda * L_adv-cons
    L_adv-cons = (1 - alpha) * KL(p_theta(x_a) || p_theta(x)) + alpha * KL(p_theta(x_a) || p_0(x))

KL uses the clean distribution as target: ``kl_div(log_softmax(adv), softmax(target))`` per sample,
averaged over the batch. ``alpha`` is never back-propagated through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .validation import check_choice, check_number

OBJECTIVES = ("none", "ce_adv", "trades", "fap", "capt")
ALPHA_STRATEGIES = ("frozen_confidence", "fixed", "agreement", "loss_ratio")
CE_ON = ("clean", "adv", "both")


def kl_per_sample(adv_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """``KL(target || adv)`` per sample, i.e. ``sum_c p_t (log p_t - log p_a)`` (target = clean)."""
    log_p_adv = F.log_softmax(adv_logits.float(), dim=1)
    log_p_t = F.log_softmax(target_logits.float(), dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_adv)).sum(1)


def _floats(**terms: torch.Tensor) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


def adaptive_alpha(strategy: str, frozen_logits: torch.Tensor | None, labels: torch.Tensor,
                   kl_train: torch.Tensor | None = None, kl_frozen: torch.Tensor | None = None,
                   value: float = 0.5) -> torch.Tensor:
    """The mixing weight ``alpha`` (per sample, or a scalar for ``fixed``/``loss_ratio``), detached.

    - ``frozen_confidence``: ``p_0(y_i | x_i)``, the frozen CLIP's confidence in the true class.
    - ``fixed``: the constant ``value``.
    - ``agreement``: 1 where the frozen CLIP is right, else 0.
    - ``loss_ratio``: ``L_train / (L_train + L_frz)`` over the batch.
    """
    check_choice("alpha strategy", strategy, ALPHA_STRATEGIES)
    with torch.no_grad():
        if strategy == "fixed":
            return torch.tensor(float(value), device=labels.device)
        if strategy == "loss_ratio":
            a, b = kl_train.mean(), kl_frozen.mean()
            return a / (a + b).clamp_min(1e-12)
        if frozen_logits is None:
            raise ValueError(f"alpha strategy {strategy!r} needs the frozen CLIP's logits")
        if strategy == "frozen_confidence":
            return F.softmax(frozen_logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
        return (frozen_logits.argmax(1) == labels).float()


@dataclass(frozen=True)
class Objective:
    """A training objective, as data.

    ``kind``: ``none`` (no training), ``ce_adv`` (CE on adversarial images), ``trades``
    (``CE_ce_on + lam * KL(adv || clean)``), ``fap`` (``CE_ce_on + lam * mean(KL * (1 + cos))``, see the
    module docstring; needs the image features) or ``capt``. ``alpha_strategy`` names how CAPT sets alpha,
    ``alpha_value`` is its constant for ``fixed``; ``ce_on`` picks the CE term's input (both = mean of
    clean and adversarial CE).
    """

    kind: str = "capt"
    lam: float = 1.5
    alpha_strategy: str = "frozen_confidence"
    alpha_value: float = 0.5
    ce_on: str = "clean"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        check_choice("objective", self.kind, OBJECTIVES)
        check_choice("alpha strategy", self.alpha_strategy, ALPHA_STRATEGIES)
        check_choice("ce_on", self.ce_on, CE_ON)
        check_number("lambda (consistency weight)", self.lam, low=0)
        check_number("alpha_value", self.alpha_value, low=0, high=1)

    @property
    def reads(self) -> tuple[str, ...]:
        """The settings this kind of objective reads (the others change nothing for it)."""
        return {"none": (), "ce_adv": (), "trades": ("lam", "ce_on"), "fap": ("lam", "ce_on"),
                "capt": ("lam", "ce_on", "alpha_strategy", "alpha_value")}[self.kind]

    @property
    def needs_clean(self) -> bool:
        return self.kind in ("trades", "fap", "capt")

    @property
    def needs_features(self) -> bool:
        """Whether the objective reads the image features of the clean and adversarial images (FAP)."""
        return self.kind == "fap"

    @property
    def needs_frozen(self) -> bool:
        return self.kind == "capt" and self.lam > 0

    def _ce(self, clean, adv, labels):
        if self.ce_on == "clean":
            return F.cross_entropy(clean.float(), labels)
        if self.ce_on == "adv":
            return F.cross_entropy(adv.float(), labels)
        return 0.5 * (F.cross_entropy(clean.float(), labels) + F.cross_entropy(adv.float(), labels))

    def __call__(self, labels: torch.Tensor, clean_logits: torch.Tensor | None = None,
                 adv_logits: torch.Tensor | None = None,
                 frozen_logits: torch.Tensor | None = None, clean_features: torch.Tensor | None = None,
                 adv_features: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Return ``(total, terms)``; ``terms`` holds floats for logging (``ce``, ``cons_train``,
        ``cons_frozen``, ``alpha`` with ``alpha_sq`` and ``alpha_low`` (its mean square and share below 0.5 over the
        batch), ``cos``, ``total``). ``clean_features``/``adv_features``: the image
        features of the two batches (``fap`` only)."""
        if self.kind == "none":
            raise ValueError("objective 'none' (zero-shot) has nothing to train")
        if self.kind == "ce_adv":
            total = F.cross_entropy(adv_logits.float(), labels)
            return total, _floats(ce=total, total=total)
        ce = self._ce(clean_logits, adv_logits, labels)
        kl_train = kl_per_sample(adv_logits, clean_logits)
        if self.kind == "trades":
            cons = kl_train.mean()
            total = ce + self.lam * cons
            return total, _floats(ce=ce, cons_train=cons, total=total)
        if self.kind == "fap":
            if clean_features is None or adv_features is None:
                raise ValueError("the FAP objective needs the image features of the clean and adversarial images "
                                 "(clean_features=..., adv_features=...)")
            cos = F.cosine_similarity(clean_features.float(), adv_features.float(), dim=1)
            cons = (kl_train * (1 + cos)).mean()
            total = ce + self.lam * cons
            return total, _floats(ce=ce, cons_train=cons, cos=cos.mean(), total=total)
        if frozen_logits is None:
            if self.lam > 0:
                raise ValueError("the CAPT objective needs the frozen CLIP's logits on the clean images")
            return ce, _floats(ce=ce, cons_train=kl_train.mean(), total=ce)  # lambda = 0: plain CE
        kl_frozen = kl_per_sample(adv_logits, frozen_logits)
        alpha = adaptive_alpha(self.alpha_strategy, frozen_logits, labels, kl_train, kl_frozen, self.alpha_value)
        cons = ((1 - alpha) * kl_train + alpha * kl_frozen).mean()
        total = ce + self.lam * cons
        # alpha's spread over the batch is logged too (its mean square and the share below 0.5), so a run's
        # history gives the distribution of alpha over its training images, not only its average
        a = alpha.float().expand(len(labels))
        return total, _floats(ce=ce, cons_train=kl_train.mean(), cons_frozen=kl_frozen.mean(),
                              alpha=a.mean(), alpha_sq=(a * a).mean(), alpha_low=(a < 0.5).float().mean(),
                              total=total)
