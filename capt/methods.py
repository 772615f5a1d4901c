"""Methods registry: a method is a prompt variant + a training objective + whether it trains on attacks.

Every method runs through the same trainer (:func:`capt.train.train`) and evaluator; they differ only
in the data below.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from .objectives import Objective
from .validation import check_choice


@dataclass(frozen=True)
class Method:
    name: str
    prompt: str
    objective: Objective
    adversarial: bool  # generate training examples with the training attack
    description: str = ""

    @property
    def trains(self) -> bool:
        return self.objective.kind != "none"

    def with_objective(self, **changes) -> "Method":
        """A copy with some objective fields changed (``lam``, ``alpha``, ``ce_on``, ...): ablations."""
        valid = [f.name for f in fields(Objective) if f.name != "extra"]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ValueError(f"unknown objective setting(s) {', '.join(map(repr, unknown))} for method "
                             f"{self.name!r}; valid choices: {', '.join(valid)}")
        return replace(self, objective=replace(self.objective, **changes))


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("zeroshot", "none", Objective("none"), False,
           "frozen CLIP with the hand-crafted template; no training"),
    Method("apt", "text", Objective("ce_adv"), True,
           "AdvCoOp/APT: shallow text context trained with CE on adversarial images"),
    Method("advvpt", "vision", Objective("ce_adv"), True,
           "deep visual prompts (VPT) trained with CE on adversarial images"),
    Method("advvlp", "ivlp", Objective("ce_adv"), True,
           "independent deep vision and text prompts trained with CE on adversarial images"),
    Method("advmaple", "maple", Objective("ce_adv"), True,
           "MaPLe-coupled deep prompts trained with CE on adversarial images"),
    Method("fap", "maple", Objective("trades", lam=1.5, ce_on="clean"), True,
           "FAP-style: MaPLe prompts, CE on clean + lambda * KL(adv || clean)"),
    Method("capt", "maple", Objective("capt", lam=1.5, alpha="frozen_confidence", ce_on="clean"), True,
           "CAPT: CE on clean + lambda * adaptive mix of self- and frozen-teacher consistency"),
]}


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str, **objective_changes) -> Method:
    """The registered method ``name``; keyword arguments override its objective (``lam=0.5``, ...)."""
    check_choice("method", name, METHODS)
    method = METHODS[name]
    return method.with_objective(**objective_changes) if objective_changes else method
