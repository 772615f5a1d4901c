"""capt: adaptive Consistency-guided Adversarial Prompt Tuning (CAPT) for CLIP, and its baselines."""

from . import attacks, objectives
from .methods import METHODS, Method, get_method, method_names
from .models import ClipBundle, load_clip
from .objectives import Objective
from .prompts import PROMPT_VARIANTS, PromptedCLIP

__version__ = "0.1.0"

__all__ = [
    "METHODS", "PROMPT_VARIANTS", "ClipBundle", "Method", "Objective", "PromptedCLIP", "attacks",
    "get_method", "load_clip", "method_names", "objectives",
]
