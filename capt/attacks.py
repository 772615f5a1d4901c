"""Adversarial attacks in ``[0, 1]`` pixel space, and adapters to torchattacks.

Within one attack only the image changes: the class text features are computed once per batch and
reused at every step (``capt`` PGD), which makes a K-step attack cost about K image-tower
forward+backward passes. torchattacks' attacks drive a :class:`FixedTextClassifier` that does the same.

:data:`KINDS` is the one table of attack kinds (label, the fields it reads, implementation, family,
cost model); :class:`AttackSpec` validates against it and its ``key`` hashes what matters. The strong
headline attack is ``aa`` (:mod:`capt.apgd`: AutoAttack's standard white-box part with an active set);
``autoattack`` (torchattacks' parts, standard settings) is its cross-check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .apgd import TARGETS, AttackStats, auto_attack
from .validation import check_choice, check_eps, check_number

LOSSES = ("ce", "cw")


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
class AttackKind:
    """One row of the table of attack kinds: everything about an attack name lives here.

    ``fields``: the :class:`AttackSpec` fields it reads (others must stay at their defaults, and are left
    out of its key); ``options``: the option names it accepts; ``impl``: whose code runs it; ``family``:
    ``clean`` / ``noise`` / ``weak`` (fixed-step gradient attacks) / ``strong`` (AutoAttack-grade);
    ``ensemble``: its per-image outcome is the worst case over itself and every weaker attack of the same
    evaluation call at no larger eps; ``cost``: image-tower forward+backward passes per image, given the
    robust fraction (the sweep's cost model reads it); ``build(spec, target) -> attack(images, labels)``:
    the attack itself, on a :class:`_Target` (what :func:`make_attack` is asked to attack).
    """

    name: str
    label: str
    fields: tuple
    impl: str
    family: str
    cost: Callable[["AttackSpec", float], float]
    build: Callable[["AttackSpec", "_Target"], Callable]
    options: tuple = ()
    ensemble: bool = False
    doc: str = ""
    column: str | None = None  # how a table's column names it (None: its label in capitals)


#: Mean forward+backward passes ``aa`` spends on an image it breaks, as a fraction of one APGD run's
#: ``steps``: 0.03 (zero-shot) and 0.06 (briefly CAPT-tuned prompts) on the mini CLIP at 4/255, 100
#: steps; most images fall within APGD-CE's first few iterations. An image that survives costs
#: ``steps x (1 + targets)`` exactly.
AA_BREAK_FRACTION = 0.06
#: torchattacks' standard AutoAttack stages after APGD-CE, per surviving image, in forward+backward
#: passes (APGD-T 9 x (steps+1); FAB-T 9 x steps with about two gradients each; Square's 5000 queries are
#: forward-only, counted as a third of a pass each).
_TA_AA_AFTER_CE = lambda steps: 9 * (steps + 1) + 9 * steps * 2 + 5000 / 3  # noqa: E731


def _targets(spec) -> int:
    return int(spec.options.get("targets", TARGETS))


class _AtLeastFourLogits(nn.Module):
    """torchattacks' targeted DLR reads the third and fourth largest logits, which fewer than four classes
    lack. Pad with the smallest logit (minus a hair, so a pad never outranks a real class): the rule
    :func:`capt.apgd.dlr_targeted` documents, and a pad is never a prediction or a target."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.classifier(images)
        pad = z.min(dim=1, keepdim=True).values - 1e-6
        return torch.cat([z, pad.expand(-1, 4 - z.shape[1])], dim=1)


@dataclass
class _Target:
    """What an attack is built against: the model, its cached text features (None: not cached), the PGD
    step size, the number of classes, the seed and the device random numbers live on."""

    model: nn.Module
    text_features: torch.Tensor | None
    cache_text: bool
    alpha: float
    num_classes: int
    seed: int
    device: torch.device

    @property
    def classifier(self) -> nn.Module:
        """What torchattacks drives: the image tower with fixed text features, or the whole model."""
        return FixedTextClassifier(self.model, self.text_features) if self.cache_text else self.model

    def seeded(self, atk) -> Callable:
        """torchattacks draws its random starts from the global generator: seed it without leaking."""
        devices = [x for x in [self.device] if torch.device(x).type == "cuda"]

        def run(x, y):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                return atk(x, y).detach()

        return run

    def targeted(self) -> tuple[nn.Module, int, int]:
        """The classifier, class count and target count for torchattacks' targeted attacks: min(9, C - 1)
        targets as the reference attacks, and fewer than four classes padded (see _AtLeastFourLogits)."""
        classifier, n_classes = self.classifier, self.num_classes
        targets = min(TARGETS, n_classes - 1)
        if n_classes < 4:
            classifier, n_classes = _AtLeastFourLogits(classifier), 4
        return classifier, n_classes, targets


def _build_noise(spec, t: _Target):
    gen = torch.Generator(device="cpu").manual_seed(t.seed)
    return lambda x, y: uniform_noise(x, spec.eps, generator=gen)


def _build_pgd(loss: str):
    def build(spec, t: _Target):
        gen = torch.Generator(device="cpu").manual_seed(t.seed)
        return lambda x, y: pgd(t.model, x, y, eps=spec.eps, alpha=t.alpha, steps=spec.steps, loss=loss,
                                text_features=t.text_features, generator=gen)
    return build


def _build_aa(spec, t: _Target):
    text_features = t.text_features
    if text_features is None:
        with torch.no_grad():
            text_features = t.model.encode_text()
    return CaptAutoAttack(spec, t.model, text_features.detach(), seed=t.seed)


def _build_ta_pgd(spec, t: _Target):
    import torchattacks

    return t.seeded(torchattacks.PGD(t.classifier, eps=spec.eps, alpha=t.alpha, steps=spec.steps, random_start=True))


def _build_apgd(spec, t: _Target):
    import torchattacks

    return t.seeded(torchattacks.APGD(t.classifier, norm="Linf", eps=spec.eps, steps=spec.steps, loss="ce",
                                      n_restarts=1, seed=t.seed))


def _build_apgdt(spec, t: _Target):
    import torchattacks

    classifier, n_classes, targets = t.targeted()
    atk = torchattacks.APGDT(classifier, norm="Linf", eps=spec.eps, steps=spec.steps, n_restarts=1,
                             n_classes=n_classes, seed=t.seed)
    atk.n_target_classes = targets
    return t.seeded(atk)


def _build_cw(spec, t: _Target):
    import torchattacks

    # torchattacks' CW is the L2 Carlini-Wagner attack (no eps); "cw_pgd" is the L-inf CW-margin PGD.
    return t.seeded(torchattacks.CW(t.classifier, c=spec.options.get("c", 1.0), kappa=0, steps=spec.steps,
                                    lr=spec.options.get("lr", 0.01)))


def _build_autoattack(spec, t: _Target):
    import torchattacks

    # Assembled from torchattacks' parts with the reference "standard" settings: torchattacks' own
    # AutoAttack class runs 10 steps and all n-1 target classes, the reference 100 steps and 9 targets.
    classifier, n_classes, targets = t.targeted()
    common = dict(norm="Linf", eps=spec.eps, n_restarts=1, seed=t.seed)
    apgdt = torchattacks.APGDT(classifier, steps=spec.steps, n_classes=n_classes, **common)
    fabt = torchattacks.FAB(classifier, steps=spec.steps, multi_targeted=True, n_classes=n_classes, **common)
    apgdt.n_target_classes = fabt.n_target_classes = targets
    return t.seeded(torchattacks.MultiAttack([
        torchattacks.APGD(classifier, steps=spec.steps, loss="ce", **common), apgdt, fabt,
        torchattacks.Square(classifier, n_queries=spec.options.get("n_queries", 5000), **common)]))


KINDS: dict[str, AttackKind] = {k.name: k for k in [
    AttackKind("clean", "clean", (), "capt", "clean", lambda s, r: 0.0, build=lambda s, t: (lambda x, y: x), doc="the images as they are"),
    AttackKind("noise", "noise", ("eps",), "capt", "noise", lambda s, r: 0.0, build=_build_noise,
               doc="uniform noise in the L-inf ball: the floor any attack must beat", column="noise"),
    AttackKind("pgd", "pgd-{steps}", ("eps", "steps", "alpha"), "capt", "weak", lambda s, r: float(s.steps),
               build=_build_pgd("ce"),
               doc="L-inf PGD on cross-entropy, random start, alpha = eps/4 by default"),
    AttackKind("cw_pgd", "cw_pgd-{steps}", ("eps", "steps", "alpha"), "capt", "weak", lambda s, r: float(s.steps),
               build=_build_pgd("cw"),
               doc="L-inf PGD on the CW margin"),
    AttackKind("ta_pgd", "ta_pgd-{steps}", ("eps", "steps", "alpha"), "torchattacks", "weak",
               lambda s, r: float(s.steps), build=_build_ta_pgd, doc="torchattacks' PGD (the cross-check of capt's PGD)"),
    AttackKind("apgd", "apgd-{steps}", ("eps", "steps"), "torchattacks", "weak",
               lambda s, r: float(s.steps + 1), build=_build_apgd, doc="torchattacks' APGD-CE, one restart"),
    AttackKind("apgdt", "apgdt-{steps}", ("eps", "steps"), "torchattacks", "weak",
               lambda s, r: 9.0 * (s.steps + 1), build=_build_apgdt, doc="torchattacks' APGD-T, min(9, C - 1) target classes"),
    AttackKind("cw", "cw", ("steps",), "torchattacks", "weak", lambda s, r: float(s.steps), build=_build_cw, options=("c", "lr"),
               doc="torchattacks' L2 Carlini-Wagner (no eps)"),
    AttackKind("aa", "aa", ("eps", "steps"), "capt", "strong",
               lambda s, r: (r * (1 + _targets(s)) + (1 - r) * AA_BREAK_FRACTION) * s.steps,
               build=_build_aa, options=("targets",), ensemble=True,
               doc="AutoAttack's standard white-box part in capt (APGD-CE, APGD-T on min(9, C - 1) targets), active set"),
    AttackKind("autoattack", "autoattack", ("eps", "steps"), "torchattacks", "strong",
               lambda s, r: (s.steps + 1) + r * _TA_AA_AFTER_CE(s.steps), build=_build_autoattack, options=("n_queries",),
               doc="standard AutoAttack assembled from torchattacks' parts (the cross-check of aa)",
               column="AutoAttack, reference"),
]}
ATTACKS = tuple(KINDS)


def kind_of_label(label: str) -> AttackKind | None:
    """The kind whose label a row's ``attack`` column holds (``pgd-10`` -> pgd, ``aa-10-t3`` -> aa), read
    from the table's label patterns; None for a label no kind writes."""
    for kind in KINDS.values():
        stem = kind.label.split("{")[0]
        if label == kind.label or label.startswith(stem if "{" in kind.label else f"{kind.label}-"):
            return kind
    return None
FAMILIES = ("clean", "noise", "weak", "strong")
# a row's precision column: the dtype the attack computed in (capt never autocasts)
PRECISIONS = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float64": "fp64"}


def precision_of(model) -> str:
    """The precision attacks on ``model`` compute in: its weights' dtype (fp32, bf16, ...)."""
    dtype = str(next(model.parameters()).dtype)
    return PRECISIONS.get(dtype, dtype)


@dataclass(frozen=True)
class AttackSpec:
    """One evaluation attack: ``name`` in :data:`ATTACKS`, L-inf ``eps``, ``steps`` and step ``alpha``
    (``None``: eps/4), ``options`` (kind-specific, see :data:`KINDS`). A field the kind does not read must
    stay at its default. ``autoattack`` chains torchattacks' APGD-CE, APGD-T (9 target classes), FAB-T
    (9 targets), each with ``steps`` iterations (100 by default), and Square with 5000 queries: the
    reference "standard" settings, run by torchattacks' implementations (with C < 10 classes, C - 1
    targets; with C < 4, logits padded as :class:`_AtLeastFourLogits` says). ``aa`` is capt's own APGD-CE +
    APGD-T (``options={"targets": 9}``) with an active set (:mod:`capt.apgd`)."""

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
        kind = self.kind
        if self.alpha is not None and "alpha" not in kind.fields:
            raise ValueError(f"attack {self.name!r} has no step size alpha (it sets its own); drop alpha="
                             f"{self.alpha!r} (attacks with alpha: "
                             f"{', '.join(k.name for k in KINDS.values() if 'alpha' in k.fields)})")
        if not isinstance(self.options, dict):
            raise ValueError(f"attack options must be a dict, got {self.options!r}")
        unknown = sorted(set(self.options) - set(kind.options))
        if unknown:
            raise ValueError(f"attack {self.name!r} reads no option {', '.join(map(repr, unknown))}; valid "
                             f"options: {', '.join(kind.options) or 'none'}")
        if "targets" in self.options:
            check_number("targets (APGD-T target classes)", self.options["targets"], low=0, integer=True)

    @property
    def kind(self) -> AttackKind:
        return KINDS[self.name]

    @property
    def family(self) -> str:
        return self.kind.family

    @property
    def label(self) -> str:
        label = self.kind.label.format(steps=self.steps)
        if self.name == "aa":  # "aa" is the standard protocol; say when it is not
            if self.steps != 100:
                label += f"-{self.steps}"
            if _targets(self) != TARGETS:
                label += f"-t{_targets(self)}"
        return label

    @property
    def key(self) -> str:
        """A hash of everything that changes this attack's outcome: its name, the fields its kind reads
        (``alpha`` resolved to its value) and its options."""
        from .results import stable_key

        d = {"name": self.name, "options": dict(sorted(self.options.items()))}
        for f in self.kind.fields:
            d[f] = (self.eps / 4 if self.alpha is None else self.alpha) if f == "alpha" else getattr(self, f)
        return stable_key(d)

    @property
    def row_eps(self) -> float:
        return self.eps if "eps" in self.kind.fields else 0.0

    @property
    def row_steps(self) -> int:
        return self.steps if "steps" in self.kind.fields else 0


def attack_cost(spec: AttackSpec, robust: float = 0.2) -> float:
    """Image-tower forward+backward passes per image that ``spec`` spends when a fraction ``robust`` of
    the images survives it (the table's estimate; the final forward pass of the evaluation not counted)."""
    check_number("robust (fraction of images that survive)", robust, low=0, high=1)
    return float(spec.kind.cost(spec, float(robust)))


def batch_seed(seed: int, batch: int) -> int:
    """The random seed of batch ``batch`` of an evaluation seeded ``seed``: each batch's random starts
    depend on its own position only, so a resumed evaluation repeats the uninterrupted one."""
    if batch == 0:
        return int(seed)
    from .results import stable_key

    return int(stable_key(["batch", int(seed), int(batch)]), 16) % (2 ** 31)


class CaptAutoAttack:
    """``attack(images, labels, skip=None) -> x_adv`` for ``aa``; ``last_correct`` holds the per-image
    outcome of the last call and ``stats`` the passes spent (:class:`capt.apgd.AttackStats`)."""

    def __init__(self, spec: AttackSpec, model, text_features: torch.Tensor, seed: int = 0, active: bool = True):
        self.spec, self.model, self.text_features, self.active = spec, model, text_features, active
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.stats = AttackStats()
        self.last_correct: torch.Tensor | None = None

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.logits_from_features(self.model.encode_image(images), self.text_features)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        _check_images(images, labels, self.model)
        correct, x_adv = auto_attack(self.logits, images, labels, self.spec.eps, self.spec.steps, _targets(self.spec),
                                     generator=self.generator, skip=skip, stats=self.stats, active=self.active)
        self.last_correct = correct
        return x_adv


def make_attack(spec: AttackSpec, model, num_classes: int | None = None, seed: int = 0,
                cache_text: bool = True, text_features: torch.Tensor | None = None,
                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``attack(images, labels) -> x_adv`` for ``spec``; the same call for capt's and torchattacks' attacks.

    ``text_features`` (computed once here if not given) are reused for every batch and step.
    ``cache_text=False`` lets torchattacks drive the :class:`PromptedCLIP` itself (recomputing text
    features at every step), which the benchmark compares against.
    """
    if text_features is None and cache_text and spec.family not in ("clean", "noise"):
        with torch.no_grad():
            text_features = model.encode_text()
    target = _Target(model, text_features, cache_text, spec.eps / 4 if spec.alpha is None else spec.alpha,
                     num_classes or len(model.classnames), seed, model.clip.logit_scale.device)
    return spec.kind.build(spec, target)
