"""A chapter's settings: the profile it names, plus the chapter's own knobs, checked at once (values
only: what a chapter computes from them is :mod:`capt.plans`).

A notebook's ``parameters`` cell holds ``profile = "mini"`` and the chapter's own knobs (``None``: the
profile's value); its setup cell is ``S = Settings.for_chapter("04_cross_dataset", globals())``.
Everything else comes from the profile (``profiles/NAME.yaml``), over the defaults below, which are the
paper's values (CLIP ViT-B/32 with OpenAI weights, PGD-100 at 1/255 on the full test sets, the
AutoAttack-grade ``aa`` on a fixed 1,000-image subset per dataset). Re-running a chapter::

    papermill notebooks/04_cross_dataset.ipynb out.ipynb -p profile paper
    papermill notebooks/04_cross_dataset.ipynb out.ipynb -p profile mini -p seeds '[1]'
    papermill notebooks/04_cross_dataset.ipynb out.ipynb -p profile mini -f my_values.yaml  # flat file

Validation has no side effects: nothing is loaded, trained or written.
"""

from __future__ import annotations

import json
import types
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import yaml

from .attacks import ATTACKS, AttackSpec
from .chapters import get_chapter
from .data.fewshot import validate_shots
from .data.registry import check_shots
from .experiments import Experiment, RunSpec, as_ref
from .methods import METHODS, get_method
from .paths import resolve
from .profiles import chapter_values, load_profile
from .prompts import CTX_INIT, DEPTH, N_CTX, prompt_variant
from .train import TrainConfig
from .validation import check_choice, check_eps, check_number

# tqdm.auto (imported by open_clip's hub code) warns once per kernel that ipywidgets is missing. capt's bars
# are plain text, and the warning would make a chapter's output depend on whether it had to load a model.
warnings.filterwarnings("ignore", message="IProgress not found")

ABLATION_GROUPS = ("alpha strategy", "lambda", "CE on", "prompt depth", "context length", "frozen teacher")
PAPER_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                  "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
_LISTS = ("targets", "shifts", "methods", "shots", "seeds", "datasets", "eps_list", "steps_list", "ablations")
_EPS = ("train_eps", "train_alpha", "eval_eps")
# what a papermill run with a profile *file* passed by ``-f`` injects (a mistake worth naming)
_PROFILE_FILE_KEYS = {"description", "base", "parameters", "notebooks", "skip"}
_IPYTHON = {"In", "Out", "exit", "quit", "get_ipython"}


@dataclass
class Settings:
    """Every parameter a chapter takes. Defaults: the paper's protocol (arXiv 2405.11154, Sec. 4)."""

    profile: str | None = None  # the profile these values came from (names the default out_dir)
    model: str = "ViT-B-32"  # "mini", or an open_clip name
    pretrained: str | None = "openai"  # open_clip weights tag or a local weights file (relative: to the workspace)
    data_root: str | None = None  # real datasets in CoOp's layout; relative to the workspace
    out_dir: str | None = None  # None: outputs/<profile> in the workspace
    device: str | None = None  # None: CUDA when available, else CPU
    source: str = "imagenet"
    targets: Sequence[str] = PAPER_DATASETS[1:]
    shifts: Sequence[str] = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")
    methods: Sequence[str] = tuple(METHODS)
    shots: Sequence = (16,)
    seeds: Sequence[int] = (1, 2, 3)
    n_ctx: int = N_CTX  # the prompt's shape: PromptedCLIP's own defaults (one home for each value)
    depth: int = DEPTH
    ctx_init: str | None = CTX_INIT
    # training: the trainer's own defaults, which are the paper's (one home for each value)
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    train_eps: float = TrainConfig.eps
    train_alpha: float = TrainConfig.alpha
    train_steps: int = TrainConfig.steps
    eval_eps: float = 1 / 255
    strong_attack: str = "aa"  # the headline robust accuracy (AutoAttack-grade)
    aa_n: int | None = 1000  # the strong attack's fixed subset per dataset (None: the whole test set)
    aa_steps: int = 100  # iterations of each of the strong attack's parts (AutoAttack's standard: 100)
    pgd_steps: int = 100  # the cheap second column
    max_n: int | None = None  # clean and PGD on a fixed subset of this many images (None: all)
    datasets: Sequence[str] = PAPER_DATASETS  # in-distribution and base-to-new tasks
    eps_list: Sequence[float] = (1 / 255, 2 / 255, 4 / 255)  # attack-strength and zero-shot sweeps
    steps_list: Sequence[int] = (10, 50, 100)
    ablations: Sequence[str] = ABLATION_GROUPS
    # a world's own value for a method's objective setting, e.g. {"fap": {"lam": 0.5}}: every run of that
    # method trains with it (its run key and rows carry the change); the ablations vary CAPT's on top
    objectives: dict = field(default_factory=dict)
    # a world's own trainer value for a method, e.g. {"advvlp": {"lr": 0.005}}: every run of that method
    # trains with it (its run key carries it); the other methods keep the profile's
    training: dict = field(default_factory=dict)
    progress: bool = False

    def __post_init__(self):
        for name in _LISTS:
            value = _from_text(getattr(self, name))
            if isinstance(value, (str, int, float)) or value is None:
                raise ValueError(f"{name} must be a list, e.g. {name}={list(getattr(Settings, name))[:3]!r}, got "
                                 f"{getattr(self, name)!r}")
            setattr(self, name, list(value))
        for name in _EPS:
            setattr(self, name, _fraction(name, getattr(self, name)))
        self.eps_list = [_fraction("eps_list", e) for e in self.eps_list]
        as_ref(self.source)
        for v in [*self.targets, *self.shifts, *self.datasets]:
            as_ref(v)
        if not self.methods:
            raise ValueError(f"methods must be a non-empty list; valid choices: {', '.join(METHODS)}")
        for m in self.methods:
            get_method(m)
        if not self.seeds:
            raise ValueError("seeds must be a non-empty list of integers, e.g. [1, 2, 3]")
        for s in self.seeds:
            check_number("seed", s, low=0, integer=True)
        self.shots = [validate_shots(k) for k in self.shots]
        for d in dict.fromkeys([self.source, *self.datasets]):  # a user's folder: enough images per class?
            check_shots(as_ref(d).name, self.shots)
        for e in [*self.eps_list, *(getattr(self, n) for n in _EPS)]:
            check_eps(e)
        for k in self.steps_list:
            check_number("steps in steps_list", k, low=1, integer=True)
        for a in self.ablations:
            check_choice("ablation group", a, ABLATION_GROUPS)
        self.objectives = _objectives(self.objectives)
        self.training = _training(self.training)
        check_choice("strong_attack", self.strong_attack, ATTACKS)
        check_number("pgd_steps", self.pgd_steps, low=1, integer=True)
        check_number("aa_steps", self.aa_steps, low=1, integer=True)
        for name in ("max_n", "aa_n"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), low=1, integer=True)
        self.train_config()  # epochs, lr, batch size, attack steps
        RunSpec(method=self.methods[0], source=self.source, **self.run_values())
        self._check_depth()

    def _check_depth(self) -> None:
        """A prompt depth larger than the encoder fails here, from the model's config (no weights read)."""
        layers = encoder_layers(self.model)
        deep = [m for m in self.methods if prompt_variant(get_method(m).prompt).deep]
        if layers is not None and deep and self.depth > layers:
            raise ValueError(f"depth={self.depth} is larger than the encoder ({layers} layers) of model "
                             f"{self.model!r} for methods {deep}; use 1 <= depth <= {layers}")

    # -- building -------------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def check_names(cls, values: dict, where: str) -> None:
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            hint = ""
            if set(unknown) & _PROFILE_FILE_KEYS:
                hint = ("; this looks like a profile file passed with papermill -f: name the profile instead, "
                        "`papermill NB.ipynb out.ipynb -p profile paper` (or -p profile path/to/file.yaml); "
                        "-f takes a flat file of settings")
            raise ValueError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}{hint}; valid choices: "
                             f"{', '.join(cls.names())}")

    @classmethod
    def from_profile(cls, profile="paper", chapter: str | None = None, **overrides) -> "Settings":
        """The settings of ``chapter`` under ``profile`` (a name, a .yaml path or a loaded profile), then
        ``overrides``; every value is checked."""
        if chapter is not None:
            get_chapter(chapter)
        data = load_profile(profile)
        values = chapter_values(data, chapter)
        cls.check_names(values, f"profile {data['name']}")
        cls.check_names(overrides, "overrides")
        return cls(**{**values, **overrides, "profile": data["name"]})

    @classmethod
    def for_chapter(cls, chapter: str, namespace: dict) -> "Settings":
        """A notebook's settings from its globals: ``profile`` plus whatever papermill injected. A name
        that no setting takes is an error (papermill would otherwise inject it unread)."""
        values = {k: v for k, v in namespace.items() if not k.startswith("_") and k not in _IPYTHON
                  and not isinstance(v, (types.ModuleType, types.FunctionType, type))}
        cls.check_names(values, f"notebook {chapter}")
        profile = values.pop("profile", None)
        if profile is None:
            raise ValueError(f"notebook {chapter}: its parameters cell must name a profile, e.g. profile = \"mini\"")
        return cls.from_profile(profile, chapter, **{k: v for k, v in values.items() if v is not None})

    # -- what chapters use --------------------------------------------------------------------------------
    @property
    def output(self) -> Path:
        """The results folder (absolute): ``out_dir``, or outputs/<profile>, in the workspace."""
        return resolve(self.out_dir if self.out_dir is not None else f"outputs/{self.profile or 'default'}")

    @property
    def weights(self) -> str | None:
        """``pretrained`` as the model loader takes it: a tag as it is, a local weights file resolved
        against the workspace (like ``data_root``), so a profile can name ``weights/robust.pt``."""
        from .models import _is_path_like

        p = self.pretrained
        return str(resolve(p)) if p is not None and _is_path_like(p) else p

    def train_config(self, method: str | None = None) -> TrainConfig:
        """The trainer's settings; for ``method``, with the profile's ``training`` values for it."""
        values = dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
        values.update(self.training.get(method, {}))
        return TrainConfig(**values, eps=self.train_eps, alpha=self.train_alpha, steps=self.train_steps)

    def experiment(self) -> Experiment:
        root = resolve(self.data_root)
        return Experiment(self.output, data_root=None if root is None else str(root), device=self.device,
                          progress=self.progress)

    def run_values(self) -> dict:
        """The model and prompt shape every run of these settings trains (RunSpec's fields)."""
        return dict(model=self.model, pretrained=self.weights, n_ctx=self.n_ctx, depth=self.depth,
                    ctx_init=self.ctx_init)

    def pgd(self, eps: float | None = None, steps: int | None = None) -> AttackSpec:
        return AttackSpec("pgd", eps=self.eval_eps if eps is None else eps, steps=steps or self.pgd_steps)

    def strong(self, eps: float | None = None) -> AttackSpec:
        """The headline attack (``aa``: APGD-CE then APGD-T, per-image worst case)."""
        return AttackSpec(self.strong_attack, eps=self.eval_eps if eps is None else eps, steps=self.aa_steps)

    @property
    def strong_n(self) -> int | None:
        """How many images per dataset the strong attack sees (never more than clean and PGD do)."""
        return self.aa_n if self.max_n is None else min(self.aa_n or self.max_n, self.max_n)

    def describe(self) -> str:
        """One line for the top of a chapter: what this run is."""
        strong = f"{self.strong_attack} on {'all' if self.strong_n is None else self.strong_n} images per dataset"
        return (f"profile {self.profile}: {self.model}{' (' + self.pretrained + ')' if self.pretrained else ''}, "
                f"source {self.source}, {len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}, eps "
                f"{_as_255(self.eval_eps)}; headline attack {strong}, PGD-{self.pgd_steps} on "
                f"{'all' if self.max_n is None else self.max_n} images, clean on all")


def _from_text(value):
    """A list or mapping papermill passed as text (``-p seeds '[1, 2]'``), parsed; anything else as it is."""
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    return value


def _per_method(name: str, value, what: str, example: str) -> dict:
    """A profile's ``{method: {setting: value}}`` field (``objectives``, ``training``), papermill's text form
    parsed; anything else of another shape is refused, with an example."""
    value = _from_text(value)
    value = {} if value is None else value
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(f"{name} maps a method to {what}, e.g. {name}={example}; got {value!r}")
    return value


def _objectives(value) -> dict:
    """``objectives`` checked: a mapping from a method to changes of its objective, each a setting that
    method's objective reads (a change it would ignore is refused, as is a change of its kind)."""
    value = _per_method("objectives", value, "changes of its objective", "{'fap': {'lam': 0.5}}")
    out = {}
    for name, changes in value.items():
        objective = get_method(name).objective  # an unknown method fails here, with the valid choices
        if "kind" in changes:
            raise ValueError(f"objectives[{name!r}]: a method with another kind of objective is another method; "
                             f"register it under its own name (capt.methods) instead of changing {name!r}'s kind")
        get_method(name, **changes)  # an unknown setting or a bad value fails here, named
        unread = sorted(set(changes) - set(objective.reads))
        if unread:
            raise ValueError(f"objectives[{name!r}]: {', '.join(map(repr, unread))} changes nothing for {name!r} "
                             f"(its {objective.kind!r} objective reads {', '.join(objective.reads) or 'no setting'})")
        out[name] = dict(changes)
    return out


TRAINING_SETTINGS = ("lr", "epochs", "batch_size")  # what ``training`` may change for one method


def _training(value) -> dict:
    """``training`` checked: a mapping from a method that trains to its own values of the trainer settings
    :data:`TRAINING_SETTINGS` (the threat model and the attack stay the profile's, the same for every method)."""
    value = _per_method("training", value, "its own trainer settings", "{'advvlp': {'lr': 0.005}}")
    out = {}
    for name, changes in value.items():
        if not get_method(name).trains:  # an unknown method fails here, with the valid choices
            raise ValueError(f"training[{name!r}]: {name!r} does not train, so its trainer settings change nothing; "
                             f"remove it")
        unknown = sorted(set(changes) - set(TRAINING_SETTINGS))
        if unknown:
            raise ValueError(f"training[{name!r}]: unknown setting(s) {', '.join(map(repr, unknown))}; valid choices: "
                             f"{', '.join(TRAINING_SETTINGS)}")
        TrainConfig(**changes)  # a bad value fails here, named
        out[name] = dict(changes)
    return out


def _fraction(name: str, value):
    """Accept ``4/255`` written as text (YAML and papermill pass it so) as well as a number."""
    if isinstance(value, str) and "/" in value:
        a, _, b = value.partition("/")
        try:
            return float(a) / float(b)
        except (ValueError, ZeroDivisionError):
            pass
        raise ValueError(f"{name} must be a number or a fraction like 4/255, got {value!r}")
    return value


def _as_255(eps: float) -> str:
    k = eps * 255
    return f"{k:.0f}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def encoder_layers(model: str) -> int | None:
    """The fewer of the model's text and image transformer layers, from its config (no weights read)."""
    if model == "mini":
        from .mini_model import DEFAULT_REPORT

        cfg = json.loads(Path(DEFAULT_REPORT).read_text())["config"]
    else:
        import open_clip

        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise ValueError(f"unknown model {model!r}; valid choices: mini, {', '.join(open_clip.list_models())}")
    return min(cfg["vision_cfg"]["layers"], cfg["text_cfg"]["layers"])
