"""Experiments as data: a run (what to train) and an evaluation (where and how to attack it).

A :class:`RunSpec` fully defines one training run (model, source data and class subset, method and its
overrides, prompt shape, shots, seed, training hyper-parameters); its hash is the run's key. The
:class:`Experiment` trains each run once (checkpoint + resume in ``out_dir/runs/<key>``), evaluates it
on each dataset under each attack once (rows in ``out_dir/results.csv``), and skips whatever is done:
re-running a notebook, or one interrupted half-way, only computes what is missing. An evaluation
interrupted half-way resumes from its last finished batch (``out_dir/partial/<run key>/<evaluation>``,
removed once its rows are stored).
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch

from .attacks import FAMILIES, AttackSpec
from .data import LabeledImages, fingerprint, get_spec, load_dataset
from .data.fewshot import base_new_split, sample_few_shot, validate_shots
from .data.registry import record_split
from .evaluate import as_attack_spec, evaluate, write_subset_index
from .io import atomic_write_text
from .methods import get_method
from .models import load_clip
from .prompts import VISION_PLACEMENTS, PromptedCLIP
from .results import ResultStore, stable_key
from .train import TrainConfig, load_prompts, seed_everything, train
from .validation import check_choice, check_number

CLASS_SUBSETS = ("all", "base", "new")


@dataclass(frozen=True)
class DataRef:
    """A dataset and which of its classes to use (``base``/``new``: CoCoOp's halves)."""

    name: str
    classes: str = "all"

    def __post_init__(self):
        get_spec(self.name)  # unknown names fail here, with the list of valid ones
        check_choice("class subset", self.classes, CLASS_SUBSETS)

    @property
    def label(self) -> str:
        return self.name if self.classes == "all" else f"{self.name}[{self.classes}]"

    def load(self, split: str, root=None, transform=None) -> LabeledImages:
        ds = load_dataset(self.name, split, root=root, transform=transform)
        if self.classes == "all":
            return ds
        base, new = base_new_split(ds)
        return base if self.classes == "base" else new


def as_ref(d) -> DataRef:
    if isinstance(d, DataRef):
        return d
    if isinstance(d, str):
        name, _, rest = d.partition("[")
        return DataRef(name, rest.rstrip("]") or "all")
    if isinstance(d, dict):
        return DataRef(**d)
    raise ValueError(f"a dataset must be a name like 'mini_source' or 'mini_source[base]', got {d!r}")


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run; ``key`` hashes it. The model and the prompt's shape have
    no defaults here: they come from :class:`capt.notebook.Settings` (the profile), their one home.
    ``seed`` is the run's one seed: few-shot sample, prompt initialisation, data order, attack starts."""

    method: str
    source: DataRef
    model: str  # "mini", or an open_clip name
    pretrained: str | None
    n_ctx: int
    depth: int
    ctx_init: str | None
    shots: int | str = 16
    seed: int = 1
    vision_placement: str = VISION_PLACEMENTS[0]  # PromptedCLIP's default
    objective_changes: tuple = ()  # (("lam", 1.0), ...) changes to the method's objective (ablations)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        object.__setattr__(self, "source", as_ref(self.source))
        changes = dict(self.objective_changes)
        method = get_method(self.method)
        method.with_objective(**changes)  # unknown or invalid settings fail here, named
        # A change equal to the method's own setting changes nothing: drop it, so the same training
        # has one key (an ablation's default variant reuses the main experiment's run).
        default = method.objective
        object.__setattr__(self, "objective_changes", tuple(sorted((k, v) for k, v in changes.items()
                                                                   if getattr(default, k) != v)))
        object.__setattr__(self, "shots", validate_shots(self.shots))
        check_number("seed", self.seed, low=0, integer=True)
        check_number("n_ctx", self.n_ctx, low=1, integer=True)
        check_number("depth", self.depth, low=1, integer=True)
        check_choice("vision prompt placement", self.vision_placement, VISION_PLACEMENTS)

    @property
    def trains(self) -> bool:
        return get_method(self.method).trains

    @property
    def key(self) -> str:
        d = asdict(self)
        if not self.trains:  # zero-shot: nothing but the model and the template matter
            d = {"method": self.method, "model": self.model, "pretrained": self.pretrained}
        elif (source_data := data_fingerprint(self.source, "train")) is not None:
            d["source_data"] = source_data
        if self.model == "mini" and self.pretrained is None:  # the committed checkpoint can be retrained
            from .mini_model import DEFAULT_REPORT

            d["weights"] = _card_sha256(str(DEFAULT_REPORT))[:16]
        return stable_key(d)

    def describe(self) -> dict:
        return {"method": self.method, "shots": 0 if not self.trains else self.shots,
                "seed": 0 if not self.trains else self.seed, "source": self.source.label,
                **{k: v for k, v in self.objective_changes}}


@functools.lru_cache(maxsize=None)
def _card_sha256(path: str) -> str:
    """The checkpoint hash its card records (read once per process: every run key asks for it)."""
    return json.loads(Path(path).read_text())["sha256"]


def data_fingerprint(ref, split: str) -> str | None:
    """The content hash the dataset registry gives a split (the mini world's generated splits), for
    result keys; None for real datasets, whose files are fixed by their download manifests."""
    return fingerprint(as_ref(ref).name, split)


@functools.lru_cache(maxsize=4)
def _clip(model: str, pretrained: str | None, device: str):
    return load_clip(model, pretrained, device=device)


class Experiment:
    """Train and evaluate :class:`RunSpec` s with caching of checkpoints and result rows."""

    def __init__(self, out_dir: str | Path = "outputs", data_root: str | Path | None = None,
                 device: str | None = None, progress: bool = True, batch_size: int = 256,
                 stop_after: int | None = None):
        self.out_dir = Path(out_dir)
        self.data_root = data_root
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.progress = progress
        self.batch_size = batch_size
        self.stop_after = stop_after  # tests of the resume: stop each evaluation after this many new batches
        self.store = ResultStore(self.out_dir)

    # -- pieces ---------------------------------------------------------------------------------
    def clip(self, spec: RunSpec):
        return _clip(spec.model, spec.pretrained, self.device)

    def build(self, spec: RunSpec, classnames: Sequence[str], templates: Sequence[str]) -> PromptedCLIP:
        seed_everything(spec.seed)  # prompt initialisation is part of the run
        return get_method(spec.method).build(self.clip(spec), classnames, n_ctx=spec.n_ctx, depth=spec.depth,
                                             ctx_init=spec.ctx_init, templates=templates,
                                             vision_placement=spec.vision_placement)

    def train_data(self, spec: RunSpec) -> LabeledImages:
        """The few-shot training set (sampled over all classes first, then halved: CoCoOp's order)."""
        record_split(spec.source.name, self.out_dir / "splits")  # a folder's split, written down for audit
        whole = load_dataset(spec.source.name, "train", root=self.data_root, transform=self.clip(spec).preprocess)
        shot = sample_few_shot(whole, spec.shots, spec.seed, cache_dir=self.out_dir / "splits")
        if spec.source.classes == "all":
            return shot
        base, new = base_new_split(shot)
        return base if spec.source.classes == "base" else new

    def trained(self, spec: RunSpec) -> PromptedCLIP:
        """The model of ``spec`` with its trained prompts (training it, or resuming it, if needed)."""
        method = get_method(spec.method, **dict(spec.objective_changes))
        data = self.train_data(spec) if spec.trains else spec.source.load("test", self.data_root,
                                                                           self.clip(spec).preprocess)
        model = self.build(spec, data.classnames, data.templates)
        if not spec.trains:
            return model
        run_dir = self.out_dir / "runs" / spec.key
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "spec.json", json.dumps({"key": spec.key, **asdict(spec)}, indent=1, default=str))
        train(model, data, method, spec.train, out_dir=run_dir, resume=True, progress=self.progress, seed=spec.seed)
        return model

    # -- the whole thing --------------------------------------------------------------------------
    def evaluate(self, spec: RunSpec, datasets: Iterable, attacks: Iterable, max_n: int | None = None,
                 eval_seed: int = 0, compute: bool = True) -> pd.DataFrame:
        """Rows for ``spec`` on every dataset under every attack, computing only what is missing
        (``compute=False``: nothing; only the rows the store already holds)."""
        refs = [as_ref(d) for d in datasets]
        specs = [as_attack_spec(a) for a in attacks]
        done = self.store.keys()

        def weaker(a: AttackSpec) -> list[AttackSpec]:
            """The attacks of this call whose outcomes an ensemble attack ``a`` includes (see evaluate)."""
            if not a.kind.ensemble:
                return []
            rank = FAMILIES.index(a.family)
            return [b for b in specs if FAMILIES.index(b.family) < rank and b.row_eps <= a.row_eps]

        def eval_key(ref: DataRef, a: AttackSpec) -> str:
            # an ensemble attack's outcome depends on the weaker attacks it is combined with: key them too
            world = data_fingerprint(ref, "test")
            return stable_key({"data": asdict(ref), "attack": a.key, "max_n": max_n, "eval_seed": eval_seed,
                               **({"with": sorted(b.key for b in weaker(a))} if a.kind.ensemble else {}),
                               **({"data_sha": world} if world is not None else {})})

        todo = {}
        for ref in refs:
            missing = [a for a in specs if (spec.key, eval_key(ref, a)) not in done]
            # an ensemble attack needs its weaker attacks in the same call (they are cheap, and repeat exactly)
            need = {a.key for a in missing} | {b.key for a in missing for b in weaker(a)}
            todo[ref] = [a for a in specs if a.key in need]
        if compute and any(todo.values()):
            source_model = self.trained(spec)
            prompts = source_model.prompt_state_dict()
            for ref, missing in todo.items():
                if not missing:
                    continue
                record_split(ref.name, self.out_dir / "splits")
                data = ref.load("test", self.data_root, self.clip(spec).preprocess)
                write_subset_index(self.out_dir / "subsets", ref.label, data, max_n, eval_seed)
                model = self.build(spec, data.classnames, data.templates)
                model.load_prompt_state_dict(prompts)
                keys = [eval_key(ref, a) for a in missing]
                partial = self.out_dir / "partial" / spec.key / stable_key(keys)
                rows = evaluate(model, data, missing, max_n=max_n, seed=eval_seed, batch_size=self.batch_size,
                                progress=self.progress, partial_dir=partial, stop_after=self.stop_after)
                rows["dataset"] = ref.label
                rows["role"] = get_spec(ref.name).role
                for k, v in spec.describe().items():
                    rows[k] = v if not isinstance(v, (list, tuple)) else str(v)
                rows["run_key"] = spec.key
                rows["eval_key"] = keys
                self.store.add(rows)
                shutil.rmtree(partial, ignore_errors=True)
        keys = {(spec.key, eval_key(r, a)) for r in refs for a in specs}
        df = self.store.read()
        if df.empty:  # an empty store (only reachable with compute=False): no rows, whatever was asked
            return df
        mask = [(k, e) in keys for k, e in zip(df["run_key"].astype(str), df["eval_key"].astype(str))]
        return df[mask].reset_index(drop=True)

    def run_jobs(self, jobs, compute: bool = True) -> pd.DataFrame:
        """Rows of every :class:`capt.plans.Job` (each run trained once), with the jobs' tags as columns;
        ``compute=False`` reads what the store holds and trains or evaluates nothing."""
        jobs = list(jobs)
        from tqdm import tqdm  # plain text bars: no ipywidgets needed in notebooks

        parts = []
        for job in tqdm(jobs, desc="jobs", disable=not self.progress):
            rows = self.evaluate(job.run, job.datasets, job.attacks, job.max_n, compute=compute)
            parts.append(rows.assign(**dict(job.tags)))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def grid(methods: Sequence[str], shots: Sequence, seeds: Sequence[int], source, **common) -> list[RunSpec]:
    """Every (method, shots, seed) run; zero-shot appears once (it neither trains nor samples)."""
    if isinstance(methods, str) or isinstance(seeds, int):
        raise ValueError("methods and seeds must be lists, e.g. methods=['capt'], seeds=[1]")
    source = as_ref(source)
    out, seen = [], set()
    for m in methods:
        for k in shots:
            for s in seeds:
                spec = RunSpec(method=m, source=source, shots=k, seed=s, **common)
                if spec.key not in seen:
                    seen.add(spec.key)
                    out.append(spec)
    return out
