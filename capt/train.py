"""One training loop for every method: attack -> objective -> SGD step, with checkpoint and resume.

Randomness is a function of (seed, epoch) for the data order and (seed, step) for the attack's random
start, so a run resumed from any checkpoint takes exactly the steps an uninterrupted run would take.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .io import atomic_path, atomic_torch_save, safe_torch_load
from .methods import Method, get_method
from .validation import check_eps, check_number

CHECKPOINT_FORMAT = "capt-train/1"


@dataclass
class TrainConfig:
    """Training hyper-parameters. Defaults follow the paper profile (SGD, lr 0.0035, cosine, one
    warm-up epoch; training attack PGD-2, eps = step = 1/255, random start)."""

    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.0035
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    eps: float = 1 / 255
    alpha: float = 1 / 255
    steps: int = 2
    checkpoint_every: int = 50
    amp: bool = True  # bf16 autocast on CUDA only; CPU always runs float32
    num_workers: int = 0

    def __post_init__(self):
        check_number("epochs", self.epochs, low=1, integer=True)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("momentum", self.momentum, low=0, high=1)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("warmup_epochs", self.warmup_epochs, low=0, integer=True)
        check_eps(self.eps)
        check_number("alpha (attack step size)", self.alpha, low=0)
        check_number("steps", self.steps, low=1, integer=True)
        check_number("checkpoint_every", self.checkpoint_every, low=1, integer=True)
        check_number("num_workers", self.num_workers, low=0, integer=True)


@dataclass
class TrainResult:
    history: pd.DataFrame
    steps: int
    total_steps: int
    seconds: float
    finished: bool
    checkpoint: Path | None = None
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (prompt initialisation draws from torch's global generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _meta(model, method: Method, config: TrainConfig, dataset) -> dict:
    return {"method": method.name, "objective": repr(method.objective), "prompt": model.prompt,
            "train_attack": method.train_attack, "vision_placement": model.vision_placement,
            "n_ctx": model.n_ctx, "depth": model.depth, "classnames": list(model.classnames),
            "text_width": model.text_width, "vision_width": model.vision_width,
            "dataset": getattr(dataset, "name", "?"), "n_train": len(dataset), "config": asdict(config)}


def _check_meta(saved: dict, current: dict, path: Path) -> None:
    diff = [k for k in current if k != "config" and saved.get(k) != current[k]]
    diff += [f"config.{k}" for k in current["config"] if saved.get("config", {}).get(k) != current["config"][k]
             and k not in ("checkpoint_every", "num_workers")]
    if diff:
        raise ValueError(f"checkpoint {path} belongs to another run (differs in {', '.join(diff)}); "
                         "use another output folder, or delete it to start over")


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return x, y, i


def autocast_for(device: torch.device, amp: bool = True):
    """The precision policy of training and evaluation: bf16 autocast on CUDA when ``amp``, else float32."""
    if amp and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def teacher_logits(model, dataset, batch_size: int = 256, device=None, amp: bool = True) -> torch.Tensor:
    """The frozen CLIP's clean logits for every item (no augmentation: they never change during training)."""
    device = device or model.clip.logit_scale.device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = []
    for x, _ in loader:
        with autocast_for(device, amp):
            out.append(model.frozen_logits(x.to(device)).float())
    return torch.cat(out)


def train(model, dataset, method: Method | str, config: TrainConfig | None = None, out_dir: str | Path | None = None,
          resume: bool = False, progress: bool = True, stop_after: int | None = None, seed: int = 1) -> TrainResult:
    """Train ``model``'s prompts on ``dataset`` with ``method``; ``seed`` (the run's one seed,
    :attr:`capt.experiments.RunSpec.seed`) fixes the data order and the attack's random starts.

    With ``out_dir``, a checkpoint (prompts, optimiser, scheduler, RNG state, history) is written
    atomically every ``config.checkpoint_every`` steps and at the end; ``resume=True`` continues from it
    to the same result as an uninterrupted run. ``stop_after`` ends the run after that many steps (as an
    interruption would). Returns the per-step history (loss terms, lr, seconds).
    """
    method = get_method(method) if isinstance(method, str) else method
    config = config or TrainConfig()
    check_number("seed", seed, low=0, integer=True)
    if model.prompt != method.prompt:
        raise ValueError(f"method {method.name!r} trains {method.prompt!r} prompts but the model has "
                         f"{model.prompt!r}; build PromptedCLIP(..., prompt={method.prompt!r})")
    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} is empty: nothing to train on")
    if not method.trains:
        return TrainResult(pd.DataFrame(), 0, 0, 0.0, True)
    device = model.clip.logit_scale.device
    params = model.prompt_parameters()
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1) if config.warmup_epochs else 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup))
    meta = {**_meta(model, method, config, dataset), "seed": seed}
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    step, history, elapsed = 0, [], 0.0
    if resume and ckpt is not None and ckpt.exists():
        state = safe_torch_load(ckpt)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt} is not a capt training checkpoint; delete it to start over")
        _check_meta(state["meta"], meta, ckpt)
        model.load_prompt_state_dict(state["prompts"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history, elapsed = int(state["step"]), list(state["history"]), float(state["seconds"])
        _set_rng_state(state["rng"])

    def save():
        if ckpt is None:
            return
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "meta": meta, "prompts": model.prompt_state_dict(),
                           "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                           "history": history, "seconds": elapsed, "rng": _rng_state()}, ckpt)

    objective = method.objective
    frozen_all = None
    if objective.needs_frozen and step < total:
        frozen_all = teacher_logits(model, dataset, device=device, amp=config.amp)

    from tqdm import tqdm  # plain text bars: no ipywidgets needed in notebooks

    bar = tqdm(total=total, initial=step, desc=f"train {method.name}", disable=not progress, leave=False)
    model.train()
    indexed = _Indexed(dataset)
    start = time.perf_counter()
    while step < total and (stop_after is None or step < stop_after):
        epoch, within = divmod(step, steps_per_epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        batches = [b.tolist() for b in order.split(config.batch_size)][within:]
        loader = torch.utils.data.DataLoader(indexed, batch_sampler=batches, num_workers=config.num_workers)
        for x, y, idx in loader:
            t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * step + 1)
            with autocast_for(device, config.amp):
                text_features = model.encode_text()
                x_adv = method.attack(model, x, y, eps=config.eps, alpha=config.alpha, steps=config.steps,
                                      text_features=text_features.detach(), generator=gen)
                feats = {}
                if objective.needs_clean:  # one image-tower pass over clean and adversarial together
                    both = model.encode_image(torch.cat([x, x_adv]))
                    logits = model.logits_from_features(both, text_features)
                    clean_logits, adv_logits = logits[: len(x)], logits[len(x):]
                    if objective.needs_features:
                        feats = {"clean_features": both[: len(x)], "adv_features": both[len(x):]}
                else:
                    clean_logits, adv_logits = None, model(x_adv, text_features)
                frozen = frozen_all[idx].to(device) if frozen_all is not None else None
                loss, terms = objective(y, clean_logits, adv_logits, frozen, **feats)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            history.append({"step": step, "epoch": epoch, "lr": opt.param_groups[0]["lr"],
                            "seconds": time.perf_counter() - t0, **terms})
            bar.update(1)
            bar.set_postfix(loss=f"{terms['total']:.3f}")
            if step % config.checkpoint_every == 0 or step == total:
                elapsed_now = elapsed + time.perf_counter() - start
                elapsed, start = elapsed_now, time.perf_counter()
                save()
            if stop_after is not None and step >= stop_after:
                break
    bar.close()
    model.eval()
    elapsed += time.perf_counter() - start
    if ckpt is not None and step == total:
        with atomic_path(ckpt.with_name("history.csv")) as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)
    return TrainResult(pd.DataFrame(history), step, total, elapsed, step == total, ckpt)


def load_prompts(model, path: str | Path, same_classes: bool = False) -> dict:
    """Load the prompts of a training checkpoint into ``model``; returns its meta.

    Prompts are class-agnostic, so by default they transfer to another class list (cross-dataset,
    distribution shift); ``same_classes=True`` insists on the class list they were trained on.
    """
    path = Path(path)
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a capt training checkpoint")
    meta = state["meta"]
    if same_classes and list(meta["classnames"]) != list(model.classnames):
        raise ValueError(f"checkpoint {path} was trained on another class list "
                         f"({len(meta['classnames'])} classes, first {meta['classnames'][:3]}) than this model "
                         f"({len(model.classnames)} classes, first {model.classnames[:3]})")
    if (meta["text_width"], meta["vision_width"]) != (model.text_width, model.vision_width):
        raise ValueError(f"checkpoint {path} was trained on another architecture (widths "
                         f"{meta['text_width']}/{meta['vision_width']}, model {model.text_width}/{model.vision_width})")
    model.load_prompt_state_dict(state["prompts"])
    return meta
