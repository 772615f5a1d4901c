"""Small argument checks shared by the library, so every bad value gets the same kind of message."""

from __future__ import annotations

import math
from typing import Iterable


def check_choice(what: str, value, choices: Iterable) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, choices))}")


def check_number(what: str, value, *, low=None, high=None, integer: bool = False,
                 low_open: bool = False) -> None:
    """``value`` must be a real number (an int if ``integer``) with low <= value <= high."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float) if not integer else int):
        raise ValueError(f"{what} must be {kind}, got {value!r} ({type(value).__name__})")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{what} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{what} must be <= {high}, got {value!r}")


def check_eps(eps) -> None:
    check_number("eps (L-inf radius in [0,1] pixel units, e.g. 1/255)", eps, low=0, high=1)


def eps_fraction(eps: float) -> str:
    """``eps`` as the fraction it stands for: ``k/255`` when it is a whole number of grey levels, else its
    exact ratio (``1/256`` stays distinct from ``1/255``); ``0`` for no budget."""
    from fractions import Fraction

    if eps == 0:
        return "0"
    k = eps * 255
    if abs(k - round(k)) < 1e-9:
        return f"{round(k)}/255"
    f = Fraction(eps).limit_denominator(100_000)
    return f"{f.numerator}/{f.denominator}"
