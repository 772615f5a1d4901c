"""GPU check of the paper setting: CLIP ViT-B/32 at 224 px, one table, in a few minutes on one GPU.

    bash scripts/gpu_check.sh [--pretrained openai|FILE] [--out FILE.json] [--tiny]

Measures:

1. ``train step``: one CAPT and one AdvMaPLe training step (PGD-2 training attack, depth-9 MaPLe prompts,
   n_ctx 2) at batch 32 under bf16 autocast, through :func:`capt.train.train`: median seconds per step
   and peak GPU memory.
2. ``PGD-100`` and the strong evaluator (attack kind ``aa``; torchattacks' APGD-CE when ``aa`` is not in
   :data:`capt.attacks.ATTACKS`, said in the table) at batch 256 in float32 and in bf16 on the same
   images: seconds, robust accuracy of each precision, and their agreement (the share of images whose
   outcome, correct or not, is the same in both).

Without CUDA it refuses to pretend: it says so and runs the same code on a tiny random CLIP on the CPU
(32 px, small batches, a few steps), which only checks that the script works. With random weights
(no ``--pretrained``) the accuracies mean nothing; the times and memory do.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ beside capt in the checkout
import capt  # noqa: E402
from tools.tiny_clip import make_tiny_clip  # noqa: E402
from capt.attacks import ATTACKS, AttackSpec, make_attack
from capt.data.base import TensorImages
from capt.train import TrainConfig, autocast_for, train


@dataclass
class Plan:
    """What one check runs: the paper setting on a GPU, or a tiny stand-in on the CPU."""

    device: str
    image_size: int = 224
    train_batch: int = 32
    train_steps: int = 4      # timed steps per method (after one untimed warm-up step)
    eval_batch: int = 256
    pgd_steps: int = 100
    strong_steps: int = 100
    n_classes: int = 100
    depth: int = 9
    tiny: bool = False


def tiny_plan() -> Plan:
    return Plan(device="cpu", image_size=32, train_batch=4, train_steps=2, eval_batch=8, pgd_steps=3,
                strong_steps=3, n_classes=5, depth=2, tiny=True)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _images(n: int, size: int, n_classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
            torch.randint(0, n_classes, (n,), generator=g))


def train_step(bundle, plan: Plan, method: str, classnames) -> dict:
    """Median seconds per training step and peak memory (GiB, CUDA only) of ``method`` at ``train_batch``."""
    images, labels = _images(plan.train_batch * (plan.train_steps + 1), plan.image_size, plan.n_classes, 1)
    data = TensorImages("gpu-check", images, labels, classnames)
    model = capt.get_method(method).build(bundle, classnames, n_ctx=2, depth=plan.depth)
    config = TrainConfig(epochs=1, batch_size=plan.train_batch, warmup_epochs=0, amp=True,
                         checkpoint_every=10**6)
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train(model, data, method, config, progress=False)
    _sync(plan.device)
    seconds = result.history["seconds"].tolist()[1:]  # the first step pays for warm-up (kernels, caches)
    peak = torch.cuda.max_memory_allocated() / 2**30 if plan.device == "cuda" else math.nan
    return {"check": f"train step {method}", "batch": plan.train_batch, "precision": "bf16" if plan.device == "cuda"
            else "fp32 (CPU)", "seconds": statistics.median(seconds), "peak_gib": peak}


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """The share (%) of images whose outcome (correct or not) is the same in both precisions."""
    if a.shape != b.shape:
        raise ValueError(f"outcomes of different images: shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return 100.0 * float((a == b).float().mean())


def attack_pair(bundle, plan: Plan, spec: AttackSpec, label: str, classnames) -> list[dict]:
    """``spec`` on the same ``eval_batch`` images in float32 and in bf16: time, accuracy, agreement."""
    model = capt.get_method("advmaple").build(bundle, classnames, n_ctx=2, depth=plan.depth).eval()
    images, labels = _images(plan.eval_batch, plan.image_size, plan.n_classes, 2)
    x, y = images.float().div(255).to(plan.device), labels.to(plan.device)
    outcomes, rows = {}, []
    for precision, amp in (("fp32", False), ("bf16", True)):
        if plan.device != "cuda" and amp:
            continue  # CPU: the library runs float32 only
        if plan.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad(), autocast_for(plan.device, amp):
            text = model.encode_text()
        attack = make_attack(spec, model, num_classes=len(classnames), seed=0, text_features=text)
        _sync(plan.device)
        t0 = time.perf_counter()
        with autocast_for(plan.device, amp):
            x_adv = attack(x, y)
            with torch.inference_mode():
                pred = model.logits_from_features(model.encode_image(x_adv), text).argmax(1)
        _sync(plan.device)
        seconds = time.perf_counter() - t0
        outcomes[precision] = (pred == y).cpu()
        rows.append({"check": label, "batch": plan.eval_batch, "precision": precision, "seconds": seconds,
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if plan.device == "cuda" else math.nan,
                     "accuracy": 100.0 * float(outcomes[precision].float().mean())})
    if len(outcomes) == 2:
        agree = agreement(outcomes["fp32"], outcomes["bf16"])
        for r in rows:
            r["agreement"] = agree
    return rows


def strong_spec(plan: Plan) -> tuple[AttackSpec, str]:
    if "aa" in ATTACKS:
        return AttackSpec("aa", eps=1 / 255, steps=plan.strong_steps), f"strong (aa, {plan.strong_steps} it.)"
    return (AttackSpec("apgd", eps=1 / 255, steps=plan.strong_steps),
            f"strong: APGD-CE {plan.strong_steps} it. (fallback: attack kind 'aa' not registered yet)")


def run(plan: Plan, pretrained: str | None = None, log=print) -> list[dict]:
    if plan.tiny:
        bundle = make_tiny_clip()
    else:
        bundle = capt.load_clip("ViT-B-32", pretrained, device=plan.device)
    classnames = [f"class {i}" for i in range(plan.n_classes)]
    rows = []
    for method in ("capt", "advmaple"):
        log(f"  train step {method} ...", flush=True)
        rows.append(train_step(bundle, plan, method, classnames))
    log(f"  PGD-{plan.pgd_steps} ...", flush=True)
    rows += attack_pair(bundle, plan, AttackSpec("pgd", eps=1 / 255, steps=plan.pgd_steps),
                        f"PGD-{plan.pgd_steps}", classnames)
    spec, label = strong_spec(plan)
    log(f"  {label} ...", flush=True)
    rows += attack_pair(bundle, plan, spec, label, classnames)
    return rows


def table(rows: list[dict]) -> str:
    def f(v, d=2):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"

    lines = ["| check | batch | precision | seconds | peak GiB | accuracy % | fp32/bf16 agreement % |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['check']} | {r['batch']} | {r['precision']} | {f(r['seconds'], 3)} | {f(r['peak_gib'])} "
                     f"| {f(r.get('accuracy'), 1)} | {f(r.get('agreement'), 1)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrained", default=None, help="open_clip tag (openai) or a weights file; default random")
    p.add_argument("--tiny", action="store_true", help="the tiny CPU stand-in, even where CUDA is present")
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if torch.cuda.is_available() and not args.tiny:
        plan = Plan(device="cuda")
        name = torch.cuda.get_device_name(0)
        print(f"GPU check on {name}: ViT-B/32 at 224 px, weights {args.pretrained or 'random'}", flush=True)
    else:
        plan = tiny_plan()
        why = "--tiny" if args.tiny else "no CUDA device is available"
        print(f"GPU check: {why}, so this is NOT a GPU measurement: a tiny random CLIP (32 px) runs the same "
              "code on the CPU, in float32, to check that the script works.", flush=True)
    t0 = time.perf_counter()
    rows = run(plan, None if plan.tiny else args.pretrained)
    print(table(rows))
    print(f"({time.perf_counter() - t0:.0f} s in all{'; tiny CPU stand-in' if plan.tiny else ''})")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": plan.device, "tiny": plan.tiny, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
