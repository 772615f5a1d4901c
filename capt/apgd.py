"""AutoAttack's standard white-box part, written for capt: APGD-CE then APGD-T, L-inf, with an active set.

The algorithm is Croce & Hein's Auto-PGD (ICML 2020, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks"), with the settings of their ``version='standard'``:
one restart, 100 iterations, step size ``2 eps`` halved at checkpoints (the first after 22 % of the
iterations, then every 3 % less, never under 6 %) when the loss rose in at most ``rho = 0.75`` of the
steps since the last checkpoint or when the best loss did not improve since an unreduced checkpoint;
momentum 0.75; a halving restarts from the best-loss point; the random start is a uniform draw in the
ball scaled so its largest coordinate is ``eps``. APGD-CE maximises cross-entropy; APGD-T maximises the
targeted DLR loss ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)`` for each of the top-9 non-true classes
``t`` of the clean logits, and only on the points APGD-CE did not break.

Where this differs from the reference code, on purpose:

- **Active set.** A point leaves the attack the moment one of its iterates is misclassified, and that
  iterate is its adversarial image. The reference keeps iterating broken points within a run; since
  every point's trajectory depends only on its own image (per-sample losses, per-sample step sizes,
  an eval-mode model), dropping it changes nobody else's outcome: the per-image outcomes equal the
  fixed-budget run's (``active=False`` runs that, for the tests), at a cost that follows the points still
  standing. :class:`AttackStats` counts the image-tower passes actually spent.
- **Targets side by side.** An image's 9 APGD-T runs share one batch instead of running one after the
  other; it leaves all of them when one succeeds. The runs are independent, so the outcome is the same;
  the attack makes 9x fewer sequential model calls (what small batches on a GPU pay for).
- **Random starts per image.** The start of every image is drawn from a generator seeded per batch,
  for the whole batch, before the active set shrinks it, so an image's start does not depend on which
  other images are still standing.
- **The first checkpoint** counts the increases of the loss against the loss at the starting point (the
  paper's definition); the reference compares its first step with a zero-initialised slot.
- The gradient of the last iterate is never used, so the last iterate gets a forward pass only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

RHO = 0.75       # checkpoint threshold: fraction of steps that must have raised the loss
MOMENTUM = 0.75  # weight of the new step (1 - MOMENTUM on the previous displacement)
TARGETS = 9      # APGD-T's target classes in the standard version


@dataclass
class AttackStats:
    """What an attack spent: ``images`` attacked, image-tower forward+backward passes ``fwd_bwd`` and
    forward-only passes ``fwd``, counted per image (a batch of 10 images is 10 passes)."""

    images: int = 0
    fwd_bwd: int = 0
    fwd: int = 0

    def add(self, other: "AttackStats") -> "AttackStats":
        self.images += other.images
        self.fwd_bwd += other.fwd_bwd
        self.fwd += other.fwd
        return self

    @property
    def passes_per_image(self) -> float:
        """Forward+backward passes per image (0 for no images)."""
        return self.fwd_bwd / self.images if self.images else 0.0


def checkpoints(steps: int) -> list[int]:
    """The iterations (0-based) after which APGD may halve its step: ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, as whole iterations of ``steps``."""
    first, least, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, at, length = [], -1, first
    while at + length < steps:
        at += length
        out.append(at)
        length = max(length - shrink, least)
    return out


def dlr_targeted(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss per sample (larger = closer to class ``target``). With fewer than four classes
    the missing order statistics are taken as the smallest logit."""
    z = logits.sort(dim=1).values
    k = z.shape[1]
    third, fourth = z[:, max(k - 3, 0)], z[:, max(k - 4, 0)]
    true = logits.gather(1, labels[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (z[:, -1] - 0.5 * (third + fourth) + 1e-12)


def _ce(logits, labels, target=None):
    return F.cross_entropy(logits, labels, reduction="none")


def apgd(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, eps: float,
         steps: int = 100, target: torch.Tensor | None = None, *, start: torch.Tensor,
         stats: AttackStats | None = None, active: bool = True, groups: torch.Tensor | None = None,
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run (CE when ``target`` is None, else targeted DLR towards ``target``) on every image.

    ``start``: uniform noise in ``[-1, 1]`` of ``x``'s shape (the random start). Returns ``(broken,
    x_adv)``: which images some iterate misclassified, and for those the first such iterate (the others
    keep ``x``). ``active=False`` runs every image for all iterations (the fixed-budget reference).
    ``groups``: rows that are runs on the same image (APGD-T's targets side by side) share a group id;
    a row leaves when any row of its group has succeeded.
    """
    stats = stats if stats is not None else AttackStats()
    loss_fn = _ce if target is None else dlr_targeted
    n = x.shape[0]
    dev = x.device
    broken = torch.zeros(n, dtype=torch.bool, device=dev)
    x_adv_out = x.clone()
    if n == 0:
        return broken, x_adv_out
    view = (-1,) + (1,) * (x.ndim - 1)
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    scale = start.flatten(1).abs().amax(1).view(view) + 1e-12
    cur = (x + eps * start / scale).clamp(0, 1)

    def evaluate(idx, points, need_grad):
        """Logits' loss and (optionally) its gradient at ``points`` (images ``idx``); marks successes."""
        yy = y[idx]
        tt = None if target is None else target[idx]
        if need_grad:
            points = points.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = logits_fn(points)
                loss = loss_fn(logits.float(), yy, tt)
                (grad,) = torch.autograd.grad(loss.sum(), points)
            stats.fwd_bwd += len(idx)
        else:
            with torch.no_grad():
                logits = logits_fn(points)
                loss = loss_fn(logits.float(), yy, tt)
            grad = None
            stats.fwd += len(idx)
        wrong = logits.detach().argmax(1) != yy
        new = wrong & ~broken[idx]
        x_adv_out[idx[new]] = points.detach()[new]
        broken[idx[new]] = True
        return loss.detach(), grad

    if groups is None:
        groups = torch.arange(n, device=dev)
    n_groups = int(groups.max()) + 1
    idx = torch.arange(n, device=dev)  # the rows still standing
    loss, grad = evaluate(idx, cur, True)
    # per-image state, full size, indexed by idx
    step = torch.full((n,), 2.0 * eps, device=dev)
    x_best, grad_best, loss_best = cur.clone(), grad.clone(), loss.clone()
    g = torch.zeros_like(x)
    g[idx] = grad
    prev = cur.clone()
    last_loss = loss.clone()              # loss at the previous iterate
    increases = torch.zeros(n, device=dev)
    best_at_check = loss_best.clone()
    reduced_at_check = torch.ones(n, dtype=torch.bool, device=dev)
    checks = set(checkpoints(steps))
    since = 0
    for i in range(steps):
        if active:
            done = torch.zeros(n_groups, dtype=torch.bool, device=dev).index_fill_(0, groups[broken], True)
            idx = idx[~done[groups[idx]]]
            if idx.numel() == 0:
                break
        xi, pi = cur[idx], prev[idx]
        s = step[idx].view(view)
        lo, hi = lower[idx], upper[idx]
        z = torch.min(torch.max(xi + s * g[idx].sign(), lo), hi)
        a = MOMENTUM if i > 0 else 1.0
        nxt = torch.min(torch.max(xi + a * (z - xi) + (1 - a) * (xi - pi), lo), hi)
        prev[idx] = xi
        cur[idx] = nxt
        last = i == steps - 1
        loss, grad = evaluate(idx, nxt, not last)
        if grad is not None:
            g[idx] = grad
        increases[idx] += (loss > last_loss[idx]).float()
        last_loss[idx] = loss
        better = loss > loss_best[idx]
        bi = idx[better]
        x_best[bi], loss_best[bi] = nxt[better], loss[better]
        if grad is not None:
            grad_best[bi] = grad[better]
        since += 1
        if i in checks:
            li = idx
            oscillates = increases[li] <= since * RHO
            stalled = ~reduced_at_check[li] & (best_at_check[li] >= loss_best[li])
            halve = oscillates | stalled
            reduced_at_check[li] = halve
            best_at_check[li] = loss_best[li]
            hi_ = li[halve]
            step[hi_] /= 2.0
            cur[hi_] = x_best[hi_]
            g[hi_] = grad_best[hi_]
            increases[li] = 0
            since = 0
    return broken, x_adv_out


def auto_attack(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, eps: float,
                steps: int = 100, targets: int = TARGETS, *, generator: torch.Generator | None = None,
                skip: torch.Tensor | None = None, stats: AttackStats | None = None, active: bool = True,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD-CE, then APGD-T on each of ``min(targets, C - 1)`` target classes, on the images still standing.

    ``skip``: images already known to be misclassified (by the clean pass or a weaker attack); they are
    not attacked. Returns ``(correct, x_adv)``: per image whether it survived (clean-correct, not in
    ``skip``, and no iterate misclassified) and its first adversarial image (``x`` for survivors).
    The random starts come from ``generator`` (drawn for the whole batch: one for APGD-CE, one per target).
    ``active=False`` attacks every image with every run for the full budget (the fixed-budget reference).
    """
    stats = stats if stats is not None else AttackStats()
    x, n = x.detach(), x.shape[0]
    stats.images += n
    noise = lambda: (2 * torch.rand(x.shape, generator=generator,  # noqa: E731
                                    device=generator.device if generator else x.device, dtype=x.dtype) - 1).to(x.device)
    with torch.no_grad():
        clean = logits_fn(x).float()
    stats.fwd += n
    correct = clean.argmax(1) == y
    if skip is not None:
        correct &= ~skip.to(correct.device)
    x_adv = x.clone()
    n_targets = min(int(targets), clean.shape[1] - 1)
    # target classes: the clean logits' ranking with the true class removed (for a correctly classified
    # image these are ranks 2, 3, ... as in the reference)
    ranked = clean.masked_fill(F.one_hot(y, clean.shape[1]).bool(), float("-inf")).argsort(1, descending=True)
    starts = [noise() for _ in range(1 + n_targets)]  # drawn for the whole batch, whoever still stands
    # APGD-CE
    todo = correct.nonzero().squeeze(1) if active else torch.arange(n, device=x.device)
    if todo.numel():
        broken, adv = apgd(logits_fn, x[todo], y[todo], eps, steps, start=starts[0][todo], stats=stats, active=active)
        _keep_first(x_adv, correct, todo, broken, adv)
    # APGD-T: the target runs of an image side by side in one batch (rows target-major); an image leaves
    # them all when one succeeds. The runs are independent, so the outcome is that of running them in turn.
    todo = correct.nonzero().squeeze(1) if active else torch.arange(n, device=x.device)
    if n_targets and todo.numel():
        m = todo.numel()
        rows = todo.repeat(n_targets)
        target = ranked[todo][:, :n_targets].T.reshape(-1)
        start = torch.cat([s[todo] for s in starts[1:]])
        groups = torch.arange(m, device=x.device).repeat(n_targets)
        broken, adv = apgd(logits_fn, x[rows], y[rows], eps, steps, target, start=start, stats=stats,
                           active=active, groups=groups)
        # per image, its first successful run in target order
        first = broken.view(n_targets, m).float().argmax(0)
        any_ = broken.view(n_targets, m).any(0)
        pick = first * m + torch.arange(m, device=x.device)
        _keep_first(x_adv, correct, todo, any_, adv[pick])
    return correct, x_adv


def _keep_first(x_adv, correct, todo, broken, adv):
    """Record the images of ``todo`` that ``broken`` says fell: their adversarial image (if still counted
    correct until now) and their outcome."""
    hit = broken & correct[todo]
    x_adv[todo[hit]] = adv[hit]
    correct[todo[broken]] = False
