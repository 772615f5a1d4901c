"""Performance benchmark of capt's attack, training and evaluation paths (CPU or GPU).

    python benchmarks/bench.py [--model mini|ViT-B-32] [--repeats N] [--steps K] [--batch B] [--out FILE.csv/md]
                               [--device cpu|cuda] [--no-amp]

Measures, on one model and one batch (B images):

1. ``pgd_vs_passes``: capt's PGD-K time vs K image-tower forward+backward passes w.r.t. the input
   (text features fixed): ratio, ideally close to 1.
2. ``pgd_vs_torchattacks``: capt's PGD-K vs torchattacks' PGD driving the PromptedCLIP itself
   (``cache_text=False``, text features recomputed every step): speed-up, plus robust accuracy of both.
3. ``train_step`` (``--train``, on by default): one CAPT training step vs one AdvMaPLe step, timed with
   :func:`capt.train.train` on a dataset of exactly ``--train-batches`` batches (the teacher's logits,
   precomputed once per run, are timed separately), and training throughput.
4. ``eval``: evaluation throughput (clean, and PGD-K) through :func:`capt.evaluate.evaluate`.
5. ``text_context``: the text tower's forward+backward over the class prompts (what every training step
   pays) through the whole context vs only its deciding prefix (``PromptedCLIP(truncate_text=...)``),
   per class count; with ``--train`` also a whole CAPT step both ways.

Timed quantities are interleaved (A, B, C, A, B, C, ...) and reported as medians over ``--repeats``, so
ratios stay meaningful on a shared machine. One untimed warm-up round runs first.

On CUDA (the default device when one is present) everything runs under bf16 autocast, as training and
evaluation do (``--no-amp``: float32); on CPU everything runs in float32, as the library does.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import capt
from capt.attacks import AttackSpec, make_attack, pgd
from capt.evaluate import evaluate
from capt.train import TrainConfig, autocast_for, seed_everything, teacher_logits, train

# Class counts the attack benchmark uses by default: the speed-up over torchattacks is the text tower's
# share of the work, which grows with the number of class prompts re-encoded at every step. 80 is the mini
# world's source task (colour x shape, ImageNet's role); 100 is a typical downstream dataset of the paper
# (Caltech101, FGVC, Food101, Flowers102, UCF101 have 100-102 classes; ImageNet has 1000).
DEFAULT_CLASSES = {"mini": (80, 10), "other": (100,)}


class TensorSet(torch.utils.data.Dataset):
    """A minimal in-memory labelled dataset (what ``train`` and ``evaluate`` need)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classnames, name: str = "bench"):
        self.images, self.labels, self.classnames, self.name = images, labels, list(classnames), name

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])

    def subset(self, idx):
        return TensorSet(self.images[idx], self.labels[idx], self.classnames, self.name)


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time every callable ``repeats`` times, alternating between them; returns the raw times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    return times


def prompted(bundle, classnames):
    """The benchmark's PromptedCLIP: MaPLe prompts, ``n_ctx = 2``, as deep as both towers allow (at most 9)."""
    m = bundle.model
    layers = min(len(m.visual.transformer.resblocks), len(getattr(m, "text", m).transformer.resblocks))
    return capt.get_method("advmaple").build(bundle, classnames, n_ctx=2, depth=min(9, layers)).eval()


def full_context_twin(bundle, model):
    """The same prompts on the same frozen CLIP (``bundle``), run through the whole text context."""
    twin = capt.PromptedCLIP(bundle, model.classnames, prompt=model.prompt, n_ctx=model.n_ctx, depth=model.depth,
                             template=model.templates, truncate_text=False).eval()
    twin.load_prompt_state_dict(model.prompt_state_dict())
    return twin


def build(model_name: str, batch: int, seed: int = 0, device: str = "cpu", n_images: int | None = None,
          classes: int = 10):
    """(PromptedCLIP with MaPLe prompts, dataset of ``n_images``, the CLIP bundle). The mini model gets mini-world
    images labelled by shape (``classes=10``) or by colour x shape (``classes=80``, the source task's label
    set); other models get random images labelled by the model's own clean predictions among ``classes``
    class prompts (random-init weights have no meaningful labels), so clean accuracy is 100% by construction."""
    from capt.data import miniworld

    if model_name == "mini":
        by_count = {len(miniworld.SHAPES): miniworld.SHAPES, len(miniworld.SOURCE_CLASSES): miniworld.SOURCE_CLASSES}
        if classes not in by_count:
            raise SystemExit(f"--classes for the mini model must be one of {sorted(by_count)} (its vocabulary "
                             "only names shapes and colours)")
        bundle = capt.load_clip("mini", device=device)
        classnames = by_count[classes]
    else:
        bundle = capt.load_clip(model_name, pretrained=None, device=device)
        classnames = [f"class {i}" for i in range(classes)]
    torch.manual_seed(seed)
    model = prompted(bundle, classnames)
    size = bundle.image_size if isinstance(bundle.image_size, int) else bundle.image_size[0]
    n = n_images or batch
    if model_name == "mini":
        attrs = miniworld.sample_attributes(np.random.default_rng(seed), n)
        images = torch.from_numpy(miniworld.render(attrs, seed)).float().div(255)
        label = attrs["shape"] if classes == len(miniworld.SHAPES) else attrs["colour"] * len(miniworld.SHAPES) + attrs["shape"]
        labels = torch.from_numpy(label).long()
    else:
        images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            labels = torch.cat([model(images[i:i + batch].to(device)).argmax(1).cpu()
                                for i in range(0, n, batch)])
    return model, TensorSet(images, labels, classnames, name=f"bench-{model_name}"), bundle


@torch.no_grad()
def _accuracy(model, x, y, text_features) -> float:
    return 100.0 * float((model.logits_from_features(model.encode_image(x), text_features).argmax(1) == y)
                         .float().mean())


def bench_attacks(model, x, y, steps: int = 10, eps: float = 1 / 255, repeats: int = 5, seed: int = 0,
                  warmup: int = 1, amp: bool = True) -> list[dict]:
    """Rows for measurements 1 and 2 on one batch ``(x, y)``; ``amp``: bf16 autocast when on CUDA."""
    autocast = lambda: autocast_for(x.device, amp)  # noqa: E731 (a fresh context per use)
    with torch.no_grad(), autocast():
        tf = model.encode_text().detach()
    last = {}  # the latest adversarial batch of each attack: robust accuracy without an extra untimed run

    def capt_pgd():
        with autocast():
            last["capt"] = pgd(model, x, y, eps=eps, steps=steps, text_features=tf,
                               generator=torch.Generator().manual_seed(seed))

    def k_passes():  # K x (image-tower forward + backward w.r.t. the input, text features fixed)
        for _ in range(steps):
            xi = x.detach().clone().requires_grad_(True)
            with autocast():
                logits = model.logits_from_features(model.encode_image(xi), tf)
            torch.autograd.grad(torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum"), xi)

    ta = make_attack(AttackSpec("ta_pgd", eps=eps, steps=steps), model, seed=seed, cache_text=False)

    def ta_pgd():
        with autocast():
            last["ta"] = ta(x, y)

    t = interleaved({"capt_pgd": capt_pgd, "k_passes": k_passes, "ta_pgd": ta_pgd}, repeats, warmup=warmup)
    med = {k: statistics.median(v) for k, v in t.items()}
    with autocast():
        acc_clean = _accuracy(model, x, y, tf)
        acc_capt = _accuracy(model, last["capt"], y, tf)
        acc_ta = _accuracy(model, last["ta"], y, tf)
    B = len(x)
    common = {"batch": B, "classes": len(model.classnames), "steps": steps, "eps": eps, "repeats": repeats}
    return [
        {**common, "measure": "pgd_vs_passes", "a": f"capt PGD-{steps}", "a_s": med["capt_pgd"],
         "b": f"{steps} x image fwd+bwd", "b_s": med["k_passes"], "ratio": med["capt_pgd"] / med["k_passes"],
         "target": "<= 1.15", "note": ""},
        {**common, "measure": "pgd_vs_torchattacks", "a": f"torchattacks PGD-{steps} (cache_text=False)",
         "a_s": med["ta_pgd"], "b": f"capt PGD-{steps}", "b_s": med["capt_pgd"],
         "ratio": med["ta_pgd"] / med["capt_pgd"], "target": ">= 1.3 (speed-up)",
         "note": f"accuracy % clean {acc_clean:.1f}, capt PGD {acc_capt:.1f}, torchattacks PGD {acc_ta:.1f}",
         "acc_clean": acc_clean, "acc_capt_pgd": acc_capt, "acc_ta_pgd": acc_ta},
    ]


def bench_text(model, full, repeats: int = 5, warmup: int = 1, amp: bool = True) -> list[dict]:
    """Measurement 5: text-tower forward+backward over all class prompts, whole context (``full``) vs the
    deciding prefix (``model``), same prompts; with the largest feature difference between the two."""
    device = model.clip.logit_scale.device
    with torch.no_grad(), autocast_for(device, amp):
        short_f, full_f = model.encode_text().float(), full.encode_text().float()
    diff = float((short_f - full_f).abs().max())
    weights = torch.randn(short_f.shape, generator=torch.Generator().manual_seed(0)).to(device)

    def fwd_bwd(m):  # what a training step pays for the text side: features, then gradients to the prompts
        def run():
            with autocast_for(device, amp):
                f = m.encode_text()
            torch.autograd.grad((f.float() * weights).sum(), m.prompt_parameters(), allow_unused=True)
        return run

    t = interleaved({"full": fwd_bwd(full), "short": fwd_bwd(model)}, repeats, warmup=warmup)
    n_full, n_short = full.prompt_tokens.shape[1], model.prompt_tokens.shape[1]
    return [{"batch": 0, "classes": len(model.classnames), "steps": 0, "eps": 0.0, "repeats": repeats,
             "measure": "text_context", "a": f"text fwd+bwd, whole context ({n_full} tokens)",
             "a_s": statistics.median(t["full"]), "b": f"text fwd+bwd, deciding prefix ({n_short} tokens)",
             "b_s": statistics.median(t["short"]),
             "ratio": statistics.median(t["full"]) / statistics.median(t["short"]), "target": "(speed-up)",
             "note": f"max |feature difference| {diff:.1e}", "max_feature_diff": diff}]


def _train_seconds(model, dataset, method: str, config: TrainConfig, init_state) -> dict:
    model.load_prompt_state_dict(init_state)
    seed_everything(1)  # the trainer's default seed, as train() below uses
    t0 = time.perf_counter()
    result = train(model, dataset, method, config, progress=False)
    wall = time.perf_counter() - t0
    model.load_prompt_state_dict(init_state)
    steps = result.history["seconds"]
    return {"step_s": float(steps.median()), "loop_s": float(steps.sum()), "wall_s": wall, "n_steps": len(steps)}


def bench_train(model, dataset, batch: int, n_batches: int, repeats: int = 5, attack_steps: int = 2,
                amp: bool = True, full=None) -> list[dict]:
    """Rows for measurement 3 (CAPT vs AdvMaPLe step) and training throughput (measurement 4); with
    ``full`` (the whole-text-context twin) also a CAPT step through the whole context (measurement 5)."""
    data = dataset.subset(list(range(batch * n_batches)))
    config = TrainConfig(epochs=1, batch_size=batch, steps=attack_steps, warmup_epochs=0,
                         checkpoint_every=10**9, amp=amp)
    init = model.prompt_state_dict()
    runs = {"capt": (model, "capt"), "advmaple": (model, "advmaple")}
    if full is not None:
        runs["capt_full_text"] = (full, "capt")
    raw = {k: [] for k in runs}
    fns = {k: (lambda k=k: raw[k].append(_train_seconds(runs[k][0], data, runs[k][1], config, init))) for k in runs}
    interleaved(fns, repeats, warmup=0)
    # The first round is the warm-up (allocator, autograd graph caches): drop it when there are enough rounds.
    rounds = {m: (v[1:] if len(v) > 2 else v) for m, v in raw.items()}
    per_step = {m: statistics.median(r["loop_s"] / r["n_steps"] for r in v) for m, v in rounds.items()}
    wall = {m: statistics.median(r["wall_s"] for r in v) for m, v in rounds.items()}
    teacher = statistics.median(interleaved({"t": lambda: teacher_logits(model, data, amp=amp)},
                                            max(3, repeats), warmup=1)["t"])
    n = len(data)
    common = {"batch": batch, "classes": len(model.classnames), "steps": attack_steps, "eps": config.eps,
              "repeats": len(rounds["capt"])}
    rows = []
    if full is not None:
        rows.append({**common, "measure": "train_text_context",
                     "a": f"CAPT step, whole text context ({full.prompt_tokens.shape[1]} tokens)",
                     "a_s": per_step["capt_full_text"],
                     "b": f"CAPT step, deciding prefix ({model.prompt_tokens.shape[1]} tokens)",
                     "b_s": per_step["capt"], "ratio": per_step["capt_full_text"] / per_step["capt"],
                     "target": "(speed-up)", "note": "same prompts, same batches, same training attack"})
    return rows + [
        {**common, "measure": "train_step", "a": "CAPT step", "a_s": per_step["capt"], "b": "AdvMaPLe step",
         "b_s": per_step["advmaple"], "ratio": per_step["capt"] / per_step["advmaple"], "target": "<= 1.3",
         "note": (f"train PGD-{attack_steps}; mean step time of a {n_batches}-step run, median over runs; teacher logits for "
                  f"{n} images precomputed once per run: {teacher:.3f} s (excluded); whole train() call "
                  f"CAPT {wall['capt']:.2f} s vs AdvMaPLe {wall['advmaple']:.2f} s")},
        {**common, "measure": "train_throughput", "a": "CAPT images/s", "a_s": n / (per_step["capt"] * n_batches),
         "b": "AdvMaPLe images/s", "b_s": n / (per_step["advmaple"] * n_batches), "ratio": float("nan"),
         "target": "", "note": "a_s/b_s are images per second (training loop, teacher precompute excluded)"},
    ]


def bench_eval(model, dataset, steps: int, batch: int, repeats: int = 3) -> list[dict]:
    """Evaluation throughput (images/s) through :func:`capt.evaluate.evaluate`: clean, and PGD-K
    (float32, as evaluation always runs)."""
    times = {"clean": [], "pgd": []}
    fns = {a: (lambda a=a: times[a].append(float(evaluate(model, dataset, [a], steps=steps, batch_size=batch,
                                                          progress=False)["seconds"].iloc[0])))
           for a in times}
    interleaved(fns, repeats, warmup=0)
    n = len(dataset)
    med = {a: statistics.median(v[1:] if len(v) > 2 else v) for a, v in times.items()}
    return [{"batch": batch, "classes": len(model.classnames), "steps": steps, "eps": 1 / 255, "repeats": repeats,
             "measure": "eval_throughput",
             "a": "clean images/s", "a_s": n / med["clean"], "b": f"PGD-{steps} images/s", "b_s": n / med["pgd"],
             "ratio": float("nan"), "target": "", "note": f"{n} images; a_s/b_s are images per second"}]


def machine_info(threads: int, device: str = "cpu", amp: bool = False) -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads, "gpu": gpu,
            "python": platform.python_version(), "device": device,
            "precision": "bf16 autocast" if amp and device == "cuda" else "float32"}


def to_markdown(rows: list[dict], model_name: str, info: dict) -> str:
    head = (f"Model `{model_name}`; CPU {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
            f"{info['threads']} thread(s), GPU: {info['gpu']}; ran on {info['device']} in {info['precision']}.\n\n"
            "| measure | classes | A | A (s or img/s) | B | B (s or img/s) | A/B | target | note |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        ratio = "" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}"
        lines.append(f"| {r['measure']} | {r['classes']} | {r['a']} | {r['a_s']:.3f} | {r['b']} | {r['b_s']:.3f} | {ratio} | "
                     f"{r['target']} | {r['note']} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mini", help="mini or an open_clip ViT name (random init), e.g. ViT-B-32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="K of the PGD-K attack benchmark")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, nargs="+", default=None,
                   help="class counts for the attack benchmark (default: 80 10 for mini, 100 otherwise); the "
                        "training and evaluation benchmarks use the first")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before the attack timings")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-batches", type=int, default=4)
    p.add_argument("--no-train", action="store_true", help="skip the training-step benchmark")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation-throughput benchmark")
    p.add_argument("--no-text-context", action="store_true",
                   help="skip the text-context benchmark (whole context vs deciding prefix)")
    p.add_argument("--out", default=None, help="write the rows to FILE.csv or a markdown table to FILE.md")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA too (default there: bf16 autocast)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False); "
                         "use --device cpu")
    amp = not args.no_amp
    torch.set_num_threads(args.threads)
    info = machine_info(torch.get_num_threads(), device=torch.device(args.device).type, amp=amp)
    n_images = args.batch * max(args.train_batches, 1 if args.no_train else 0, 4)
    classes = args.classes or DEFAULT_CLASSES["mini" if args.model == "mini" else "other"]
    rows = []
    for i, n_classes in enumerate(classes):
        model, data, bundle = build(args.model, args.batch, n_images=n_images if i == 0 else args.batch,
                                    classes=n_classes, device=args.device)
        full = None if args.no_text_context else full_context_twin(bundle, model)
        if i == 0:
            first = (model, data, full)
        x, y = data.images[:args.batch].to(args.device), data.labels[:args.batch].to(args.device)
        rows += bench_attacks(model, x, y, steps=args.steps, repeats=args.repeats, warmup=args.warmup, amp=amp)
        if not args.no_text_context:
            rows += bench_text(model, full, repeats=args.repeats, warmup=args.warmup, amp=amp)
    model, data, full = first
    if not args.no_train:
        rows += bench_train(model, data, args.batch, args.train_batches, repeats=args.repeats, amp=amp, full=full)
    if not args.no_eval:
        rows += bench_eval(model, data, args.steps, args.batch, repeats=args.repeats)
    for r in rows:
        r.update(model=args.model, **info)
    md = to_markdown(rows, args.model, info)
    print(md)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".csv":
            import pandas as pd

            pd.DataFrame(rows).to_csv(out, index=False)
        else:
            out.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
