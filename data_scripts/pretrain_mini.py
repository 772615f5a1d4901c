#!/usr/bin/env python
"""Pretrain the embedded mini CLIP on the procedural mini world and write its competence report.

    python data_scripts/pretrain_mini.py                 # pretrain, evaluate, write the checkpoint + JSON
    python data_scripts/pretrain_mini.py --report-only   # re-evaluate the committed checkpoint

The model (``capt.mini_model.MODEL_CONFIG``) is trained from scratch with a multi-positive contrastive
loss on a fresh stream of world images and captions (``capt.data.miniworld.pretrain_batch``): every
caption in the batch that fits an image counts as its match, since many images share a caption.
Held-out colour x shape combinations never appear in the stream. Training is seeded, single-process,
with a fixed thread count and deterministic algorithms, so the same command on the same machine gives
the same checkpoint bytes. The checkpoint (weights stored as float16) and the report are written
atomically (temporary file, then ``os.replace``).

The report holds, for every mini dataset, the zero-shot accuracy with its hand-crafted template (no
tuning) and chance level, the held-out combinations' accuracy as part of the full 80-class source
label set, and robust accuracy under a small L-inf PGD-10 (random start, step eps/4) on the source
test set.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from capt.data import load_dataset
from capt.data import miniworld as mw
from capt.mini_model import (DEFAULT_CHECKPOINT, MEAN, MODEL_CONFIG, STD, MiniTokenizer, build_mini,
                             count_parameters, load_mini)

GOLDEN_SUBSET = {"mini_source": 200, "mini_shape": 200}  # first N test images; tests recompute these
PGD_EPS = (1, 2, 4, 8)  # /255
PGD_STEPS = 10


# ----------------------------------------------------------------------------------------------
# Zero-shot evaluation and a tiny PGD (the library's attack module is the real one)
# ----------------------------------------------------------------------------------------------
def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def text_classifier(model, tokenizer, classnames, templates) -> torch.Tensor:
    """(C, D) unit text embeddings, averaged over templates."""
    feats = []
    for c in classnames:
        t = model.encode_text(tokenizer([tpl.format(c) for tpl in templates]), normalize=True)
        feats.append(F.normalize(t.mean(0), dim=-1))
    return torch.stack(feats)


def logits_for(model, text_feats, x01: torch.Tensor) -> torch.Tensor:
    img = model.encode_image(_normalise(x01), normalize=True)
    return model.logit_scale.exp() * img @ text_feats.T


@torch.no_grad()
def zero_shot(model, tokenizer, ds, classnames=None, templates=None, limit=None, batch=500):
    """Accuracy of zero-shot classification of ``ds`` (optionally with other class names/templates)."""
    text = text_classifier(model, tokenizer, classnames or ds.classnames, templates or ds.templates)
    n = len(ds) if limit is None else min(limit, len(ds))
    correct = 0
    for s in range(0, n, batch):
        idx = range(s, min(n, s + batch))
        x = torch.stack([ds[i][0] for i in idx])
        y = torch.tensor([ds[i][1] for i in idx])
        correct += (logits_for(model, text, x).argmax(1) == y).sum().item()
    return correct / n


def pgd_accuracy(model, tokenizer, ds, eps: float, steps: int = PGD_STEPS, batch: int = 400, seed: int = 0):
    """Robust accuracy under L-inf PGD with random start, step eps/4, maximising cross-entropy."""
    text = text_classifier(model, tokenizer, ds.classnames, ds.templates)
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for p in model.parameters():
        p.requires_grad_(False)
    for s in range(0, len(ds), batch):
        idx = range(s, min(len(ds), s + batch))
        x = torch.stack([ds[i][0] for i in idx])
        y = torch.tensor([ds[i][1] for i in idx])
        delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        for _ in range(steps):
            loss = F.cross_entropy(logits_for(model, text, x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta += (eps / 4) * grad.sign()
                delta.clamp_(-eps, eps)
                delta.copy_((x + delta).clamp(0, 1) - x)
        with torch.no_grad():
            correct += (logits_for(model, text, x + delta).argmax(1) == y).sum().item()
    for p in model.parameters():
        p.requires_grad_(True)
    return correct / len(ds)


def heldout_in_source(model, tokenizer) -> float:
    """Accuracy on the held-out combinations, classified among all 80 source classes."""
    ds = load_dataset("mini_heldout", "test")
    src = mw.TASKS["mini_source"]
    mapping = [src.classnames.index(c) for c in ds.classnames]
    ds80 = ds.relabel(list(src.classnames), {k: v for k, v in enumerate(mapping)})
    return zero_shot(model, tokenizer, ds80, templates=list(src.templates))


def competence_report(model, tokenizer, pgd: bool = True, log=print) -> dict:
    model.eval()
    report = {"zero_shot": {}, "golden": {}}
    for name, task in mw.TASKS.items():
        ds = load_dataset(name, "test")
        acc = zero_shot(model, tokenizer, ds)
        chance = 1.0 / len(task.classnames)
        report["zero_shot"][name] = {"acc": round(acc, 4), "chance": round(chance, 4), "n": len(ds),
                                     "classes": len(task.classnames), "role": task.role,
                                     "template": task.templates[0]}
        log(f"  {name:<20s} {task.role:<7s} {acc * 100:6.1f} %   (chance {chance * 100:5.1f} %, n={len(ds)})")
    h = heldout_in_source(model, tokenizer)
    report["heldout_in_source_80way"] = round(h, 4)
    log(f"  {'held-out in source':<20s} 80-way  {h * 100:6.1f} %   (chance {100 / 80:5.1f} %)")
    for name, n in GOLDEN_SUBSET.items():
        ds = load_dataset(name, "test")
        report["golden"][name] = {"n": n, "acc": zero_shot(model, tokenizer, ds, limit=n)}
    if pgd:
        ds = load_dataset("mini_source", "test")
        rob = {"0": report["zero_shot"]["mini_source"]["acc"]}
        for e in PGD_EPS:
            rob[str(e)] = round(pgd_accuracy(model, tokenizer, ds, e / 255), 4)
            log(f"  PGD-{PGD_STEPS} eps={e}/255 on mini_source: {rob[str(e)] * 100:5.1f} %")
        report["pgd10_mini_source"] = {"eps_over_255": rob, "steps": PGD_STEPS, "step_size": "eps/4",
                                       "random_start": True, "n": len(ds)}
    report["checks"] = _checks(report)
    for k, v in report["checks"].items():
        log(f"  check {k:<34s} {'ok' if v else 'FAILED'}")
    return report


def _checks(r: dict) -> dict:
    z = r["zero_shot"]
    src = z["mini_source"]["acc"]
    targets = [v for v in z.values() if v["role"] == "target"]
    shifts = [v for v in z.values() if v["role"] == "shift"]
    out = {
        "source >= 85%": src >= 0.85,
        "shape >= 85%": z["mini_shape"]["acc"] >= 0.85,
        ">= 6 targets at >= 2x chance": sum(v["acc"] >= 2 * v["chance"] for v in targets) >= 6,
        "held-out in source >= 50%": r["heldout_in_source_80way"] >= 0.5,
        "shifts below source": all(v["acc"] < src for v in shifts),
        "shifts >= 5x chance": all(v["acc"] >= 5 * v["chance"] for v in shifts),
    }
    if "pgd10_mini_source" in r:
        out["PGD eps=4/255 < clean / 3"] = r["pgd10_mini_source"]["eps_over_255"]["4"] < src / 3
    return out


# ----------------------------------------------------------------------------------------------
# Pretraining
# ----------------------------------------------------------------------------------------------
def multi_positive_loss(img, txt, scale, match: torch.Tensor) -> torch.Tensor:
    """Contrastive loss whose targets are uniform over every fitting caption (image->text) and
    every fitting image (text->image), instead of the diagonal only."""
    logits = scale * img @ txt.T
    t_i2t = match / match.sum(1, keepdim=True)
    t_t2i = (match / match.sum(0, keepdim=True)).T
    return 0.5 * (F.cross_entropy(logits, t_i2t) + F.cross_entropy(logits.T, t_t2i))


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))


def pretrain(args, log=print):
    torch.manual_seed(args.seed)
    tokenizer = MiniTokenizer()
    model = build_mini(vocab_size=len(tokenizer))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    model.train()
    t0 = time.time()
    running = None
    for step in range(args.steps):
        images, texts, match, _ = mw.pretrain_batch(args.seed * 1_000_003 + step, args.batch)
        x = torch.from_numpy(images).float().div_(255)
        tok = tokenizer(texts)
        m = torch.from_numpy(match).float()
        for g in opt.param_groups:
            g["lr"] = _lr(step, args.steps, args.lr, args.warmup)
        img = model.encode_image(_normalise(x), normalize=True)
        txt = model.encode_text(tok, normalize=True)
        loss = multi_positive_loss(img, txt, model.logit_scale.exp(), m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            el = time.time() - t0
            log(f"step {step:5d}/{args.steps}  loss {running:.3f}  scale {model.logit_scale.exp().item():5.1f}"
                f"  {el:6.0f}s elapsed, ~{el / (step + 1) * (args.steps - step - 1):4.0f}s left")
    return model, tokenizer, time.time() - t0


def checkpoint_bytes(model, tokenizer) -> bytes:
    config = json.loads(json.dumps(MODEL_CONFIG))
    config["text_cfg"]["vocab_size"] = len(tokenizer)
    blob = {
        "format": "capt-mini-clip/1",
        "config": config,
        "vocab": list(tokenizer.vocab),
        "state_dict": {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()},
        "mean": list(MEAN),
        "std": list(STD),
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--report-only", action="store_true", help="evaluate the checkpoint at --out, train nothing")
    ap.add_argument("--no-pgd", action="store_true", help="skip the PGD part of the report")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    out = args.out.resolve()
    report_path = out.with_suffix(".json")
    info = {}
    if args.report_only:
        print(f"evaluating {out}", flush=True)
        if report_path.is_file():
            info = json.loads(report_path.read_text())
    else:
        print(f"pretraining the mini CLIP: {args.steps} steps x batch {args.batch}, seed {args.seed}, "
              f"{args.threads} threads", flush=True)
        model, tokenizer, seconds = pretrain(args, log=lambda s: print(s, flush=True))
        data = checkpoint_bytes(model, tokenizer)
        _atomic_write(out, data)
        cmd = " ".join(["python", "data_scripts/pretrain_mini.py"] + [a for a in (argv or sys.argv[1:])])
        info = {
            "checkpoint": "capt/assets/mini_clip.pt" if out == DEFAULT_CHECKPOINT.resolve() else str(out),
            "reproduce": cmd,
            "steps": args.steps, "batch": args.batch, "lr": args.lr, "weight_decay": args.wd,
            "warmup": args.warmup, "seed": args.seed, "threads": args.threads,
            "pretrain_seconds": round(seconds, 1),
            "size_bytes": len(data),
            "weights_dtype": "float16 on disk, float32 when loaded",
            "environment": {"torch": torch.__version__, "numpy": np.__version__,
                            "python": platform.python_version(), "machine": platform.machine()},
        }
    data = out.read_bytes()
    info["sha256"] = hashlib.sha256(data).hexdigest()
    loaded = load_mini(out)  # evaluate exactly what is on disk (float16-rounded weights)
    model, tokenizer = loaded["model"], loaded["tokenizer"]
    info["parameters"] = count_parameters(model)
    info["config"] = json.loads(json.dumps(MODEL_CONFIG))
    info["vocab_size"] = len(tokenizer)
    print(f"checkpoint {out} ({len(data) / 1e6:.2f} MB, {info['parameters']:,} parameters), "
          f"sha256 {info['sha256']}", flush=True)
    print("competence report (zero-shot, hand-crafted template, no tuning):", flush=True)
    t0 = time.time()
    info["report"] = competence_report(model, tokenizer, pgd=not args.no_pgd, log=lambda s: print(s, flush=True))
    info["report_seconds"] = round(time.time() - t0, 1)
    _atomic_write(report_path, (json.dumps(info, indent=2) + "\n").encode())
    print(f"wrote {report_path}", flush=True)
    return 0 if all(info["report"]["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
