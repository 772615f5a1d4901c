#!/usr/bin/env python
"""Probes that decide the fourth mini world and mini CLIP (issue 21), on the book's own code.

    python benchmarks/mini_v4_probe.py cost      [--rounds 3]                       # per-step cost vs v3
    python benchmarks/mini_v4_probe.py zeroshot  [--world W] [--ckpt P] [--eps 3]   # frozen CLIP, clean + aa
    python benchmarks/mini_v4_probe.py tecoa     [--world W] [--ckpt P] [--train-eps 3] [--eps 3]
    python benchmarks/mini_v4_probe.py prompt    [--method advmaple] [--depth 3] [--n-ctx 2] [--train-eps 2]
    python benchmarks/mini_v4_probe.py pretrain  --arch L6W96 [--world W] [--steps 800] --ckpt OUT.pt
    python benchmarks/mini_v4_probe.py tail      --init A50.pt --steps 1200 --ckpt OUT.pt       # continued pretraining
    python benchmarks/mini_v4_probe.py readout   [--ckpt P] [--lr 0.01] [--epochs 5] [--pool 20000]
    python benchmarks/mini_v4_probe.py table                                       # the log as markdown

Every probe is seeded (``--seed``, default 1) and appends one JSON line to ``--log`` (default
``benchmarks/mini_v4_probe.jsonl``): the probe's settings, clean and robust accuracy (%) under the
book's ``aa`` (APGD-CE + APGD-T, 100 iterations, 9 targets) on the first-``--n`` seeded fixed subset of the
source's test images (``capt.evaluate.fixed_subset``, eval seed 0), wall and process-CPU seconds.

* ``--world``: a variant of the source task (:data:`WORLDS`: its look and its classes); pretraining
  under ``pretrain --world`` renders the whole stream in that world's look.
* ``--ckpt``: a mini CLIP checkpoint (default: the committed v3, ``capt/assets/mini_clip.pt``). The world is
  rendered at the checkpoint's (or, for ``pretrain``, the ``--arch``'s) image size (``miniworld.set_image_size``).
* ``tecoa``: the ceiling. The whole image tower fine-tuned adversarially (TeCoA-style: CE on PGD-2
  images against the frozen text head of the hand-crafted template), AdamW, on ``--pool`` source
  training images for ``--epochs``; then the same evaluation as every other probe.
* ``prompt``: one method of the book (``capt.methods``) trained with ``capt.train`` on 16 shots per
  class, the mini profile's settings unless overridden (lr 0.01, 4 epochs, batch 32, PGD-2).
* ``cost``: per pretraining step (batch 256, contrastive loss, forward + backward + AdamW) and per image
  through the attacked image tower (forward + backward to the input, batch 256) of every :data:`ARCHS`
  entry, interleaved over ``--rounds`` so that contention hits each alike; medians, and the ratio to v3.

Nothing here changes the committed checkpoint or the profiles: candidate worlds and architectures live
in the two tables below. Timings on a shared machine are noisy: say so when quoting them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# A probe world's task key holds its label function's address, so its disk-cache files would never be read
# again (1 GB after this session's probes): render in memory only
os.environ.setdefault("CAPT_NO_DISK_CACHE", "1")
sys.path.insert(0, str(ROOT / "data_scripts"))

import pretrain_mini as pm  # noqa: E402  (the pretraining script is the one way a mini CLIP is made)

from capt.attacks import AttackSpec  # noqa: E402
from capt.data import load_dataset  # noqa: E402
from capt.data import miniworld as mw  # noqa: E402
from capt.data.fewshot import sample_few_shot  # noqa: E402
from capt.evaluate import evaluate  # noqa: E402
from capt.methods import get_method  # noqa: E402
from capt.mini_model import MODEL_CONFIG, build_mini  # noqa: E402
from capt.models import load_clip  # noqa: E402
from capt.train import TrainConfig, seed_everything, train  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Candidate architectures: v3 and deeper/wider towers (prompts would go in the first two thirds)
# ----------------------------------------------------------------------------------------------


def _arch(layers: int, width: int, patch: int = 8, text_layers: int | None = None, text_width: int = 64,
          image_size: int = 32, head_width: int = 32) -> dict:
    cfg = copy.deepcopy(MODEL_CONFIG)
    cfg["vision_cfg"].update(layers=layers, width=width, patch_size=patch, head_width=head_width,
                             image_size=image_size)
    cfg["text_cfg"].update(layers=text_layers or layers, width=text_width, heads=max(2, text_width // 32))
    return cfg


ARCHS = {
    "v3": copy.deepcopy(MODEL_CONFIG),  # 3 layers, width 64, patch 8 (16 tokens)
    "L6W64": _arch(6, 64),
    "L4W96": _arch(4, 96),
    "L6W96": _arch(6, 96),
    "L6W128": _arch(6, 128),
    "L3W64p4": _arch(3, 64, patch=4),  # 64 image tokens
    "L6W96p4": _arch(6, 96, patch=4),
    # session 4: the same scene rendered at 64 x 64 (miniworld.IMAGE_SIZE), 16 tokens of 16 x 16 pixels
    "R64": _arch(3, 64, patch=16, image_size=64),
    "R64H16": _arch(3, 64, patch=16, image_size=64, head_width=16),
}

# ----------------------------------------------------------------------------------------------
# Candidate worlds: the source task's look and classes (v3 is the committed mini_source)
# ----------------------------------------------------------------------------------------------
# Well-separated hues of the v3 palette (0, 52, 125, 225, 272 degrees: gaps >= 47 degrees)
_FAR_HUES = (0, 2, 4, 7, 8)

# v3's look (the committed mini_source's), spelled out, so every world here is v3's look plus its own
# changes whatever mw.Look's defaults are; "v4" is the look this session's towers were pretrained in
_V3_LOOK = {"saturation": (0.5, 1.0), "value": (0.6, 1.0), "hue_jitter": 13.0, "noise": 4.0}
WORLDS = {
    "v3": {"look": {}},
    "v4": {"look": {"saturation": (0.75, 1.0), "value": (0.8, 1.0), "hue_jitter": 6.0, "noise": 0.0}},
    "clean_sensor": {"look": {"noise": 0.0}},  # no sensor noise
    "vivid": {"look": {"saturation": (0.75, 1.0), "value": (0.8, 1.0), "hue_jitter": 6.0}},  # hue margins
    "vivid_clean": {"look": {"saturation": (0.75, 1.0), "value": (0.8, 1.0), "hue_jitter": 6.0, "noise": 0.0}},
    "large": {"look": {"small_scale": (9.0, 10.5)}},  # small objects 40 % larger: shapes with more pixels
    # the world's non-robust feature (miniworld.Look.cue_amplitude): a faint pattern keyed by colour and shape
    "cue3": {"look": {"cue_amplitude": 3.0, "cue_agreement": 0.75}},
    "cue2": {"look": {"cue_amplitude": 2.0, "cue_agreement": 0.75}},
    "far5": {"colours": _FAR_HUES},  # 5 well-separated hues x 10 shapes = 50 classes
    "far5_vivid": {"colours": _FAR_HUES, "look": {"saturation": (0.75, 1.0), "value": (0.8, 1.0),
                                                  "hue_jitter": 6.0}},
}


def world_look(world: str) -> mw.Look:
    return replace(mw.Look(), **{**_V3_LOOK, **WORLDS[world].get("look", {})})


def source_name(world: str) -> str:
    """Register (once) the world's source task and return its dataset name."""
    if world == "v3":  # the committed world
        return "mini_source"
    name = f"probe_source_{world}"
    if name in mw.TASKS:
        return name
    spec = WORLDS[world]
    base = mw.TASKS["mini_source"]
    colours = spec.get("colours")
    if colours is None:
        classnames, label_attrs = base.classnames, base.label_attrs
    else:
        cols = np.asarray(colours)
        classnames = tuple(f"{mw.COLOURS[c]} {s}" for c in colours for s in mw.SOURCE_SHAPES)
        ns = len(mw.SOURCE_SHAPES)
        label_attrs = (lambda y, _c=cols: {"colour": _c[y // ns], "shape": y % ns})
    # keep the test set at 2,000 images and the pool at 20,000 whatever the class count
    sizes = {k: v * len(base.classnames) // len(classnames) for k, v in base.sizes.items()}
    task = replace(base, name=name, classnames=classnames, label_attrs=label_attrs, look=world_look(world),
                   sizes=sizes, description=f"probe world {world}")
    mw.TASKS[name] = task
    from capt.data.registry import DatasetSpec, register

    register(DatasetSpec(name=name, kind="mini", role="source",
                         build=(lambda split, root, tr, _n=name: mw.build(_n, split)),
                         description=task.description, templates=task.templates, splits=tuple(task.sizes)))
    return name


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------
def robust_eval(model, test, eps: float, n: int) -> dict:
    rows = evaluate(model, test, ["clean", AttackSpec("aa", eps=eps, steps=100)], max_n=n, progress=False)
    out = {"clean": round(float(rows.accuracy[0]), 2), "robust": round(float(rows.accuracy[1]), 2),
           "n": int(rows.n[0]), "aa_seconds": round(float(rows.seconds[1]), 1),
           "aa_passes_per_image": round(float(rows.passes[1]), 1)}
    whole = evaluate(model, test, ["clean"], progress=False)  # clean on the whole test set too
    out["clean_all"] = round(float(whole.accuracy[0]), 2)
    return out


zero_shot = pm.zero_shot_model  # the frozen CLIP with the dataset's hand-crafted template


def log_result(args, record: dict) -> None:
    record = {"probe": args.probe, "seed": args.seed, **record}
    print(json.dumps(record), flush=True)
    with open(args.log, "a") as f:
        f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------------
# Probes
# ----------------------------------------------------------------------------------------------
def probe_zeroshot(args) -> dict:
    bundle = load_clip("mini", checkpoint=args.ckpt)
    test = load_dataset(source_name(args.world), "test")
    model = zero_shot(bundle, test)
    return {"world": args.world, "ckpt": str(args.ckpt), "eps_255": args.eps, **clean_confidence(model, test),
            **robust_eval(model, test, args.eps / 255, args.n)}


def _frozen_on_source(args):
    """The world's source test and training sets, the zero-shot model on them and its class features."""
    name = source_name(args.world)
    test, pool = load_dataset(name, "test"), load_dataset(name, "train")
    model = zero_shot(load_clip("mini", checkpoint=args.ckpt), test)
    with torch.no_grad():
        return test, pool, model, model.encode_text()


def _adversarial_fit(args, model, params, pool, classes) -> tuple[int, int]:
    """The pretraining script's TeCoA-style fit (``pm.adversarial_fit``) at ``--train-eps``, ``--lr``,
    ``--epochs``, ``--batch`` on ``--pool`` seeded source training images. Returns (steps, images used)."""
    idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed))[:args.pool]
    x_all, y_all = pool.images[idx].float().div_(255), torch.tensor(pool.labels)[idx]
    steps = pm.adversarial_fit(model, params, x_all, y_all, classes, eps=args.train_eps / 255, epochs=args.epochs,
                               lr=args.lr, batch=args.batch, seed=args.seed, log=lambda e, loss: print(
                                   f"  {args.probe} epoch {e}/{args.epochs}: last loss {loss:.3f}", flush=True))
    return steps, len(idx)


def probe_tecoa(args) -> dict:
    test, pool, model, text = _frozen_on_source(args)
    visual = model.clip.visual
    # which part of the tower learns (comma-separated name prefixes, e.g. "conv1" or "transformer.resblocks.2")
    parts = None if args.trainable == "all" else tuple(args.trainable.split(","))
    trained = [p for n, p in visual.named_parameters() if parts is None or n.startswith(parts)]
    if not trained:
        raise SystemExit(f"--trainable {args.trainable!r} names no parameter of the image tower; valid prefixes: "
                         + ", ".join(sorted({n.split('.')[0] for n, _ in visual.named_parameters()})))
    for p in trained:
        p.requires_grad_(True)
    steps, pool_n = _adversarial_fit(args, model, trained, pool, lambda: text)
    for p in trained:
        p.requires_grad_(False)
    model.eval()
    return {"world": args.world, "ckpt": str(args.ckpt), "train_eps_255": args.train_eps, "eps_255": args.eps,
            "trainable": args.trainable, "trained_parameters": sum(p.numel() for p in trained),
            "pool": pool_n, "epochs": args.epochs, "lr": args.lr, "train_steps": steps,
            **robust_eval(model, test, args.eps / 255, args.n)}


def probe_readout(args) -> dict:
    """How robust a *readout* of the frozen features can be: the class text features replaced by a linear
    head, trained adversarially (CE on PGD-2 images, AdamW) on ``--pool`` source training images. Prompts
    also change the features; a head cannot, so this separates "the tower has robust features and the
    hand-crafted readout ignores them" from "the tower has none"."""
    test, pool, base, text = _frozen_on_source(args)
    head = torch.nn.Parameter(text.clone())  # a linear head in place of the class texts, starting from them
    steps, pool_n = _adversarial_fit(args, base, [head], pool, lambda: head)
    base.frozen_text_features = head.detach()  # what the zero-shot model answers with
    return {"world": args.world, "ckpt": str(args.ckpt), "method": "linear readout", "train_eps_255": args.train_eps,
            "eps_255": args.eps, "pool": pool_n, "epochs": args.epochs, "lr": args.lr, "train_steps": steps,
            **robust_eval(base, test, args.eps / 255, args.n)}


def probe_prompt(args) -> dict:
    bundle = load_clip("mini", checkpoint=args.ckpt)
    name = source_name(args.world)
    test = load_dataset(name, "test")
    shots = sample_few_shot(load_dataset(name, "train"), args.shots, seed=args.seed)
    method = get_method(args.method, **({} if args.lam is None else {"lam": args.lam}))
    seed_everything(args.seed)
    model = method.build(bundle, list(shots.classnames), n_ctx=args.n_ctx, depth=args.depth,
                         templates=list(shots.templates))
    cfg = TrainConfig(epochs=args.epochs, batch_size=32, lr=args.lr, eps=args.train_eps / 255,
                      alpha=args.train_eps / 255, steps=2)
    t0 = time.time()
    res = train(model, shots, method, cfg, progress=False, seed=args.seed)
    train_s = time.time() - t0
    return {"world": args.world, "ckpt": str(args.ckpt), "method": args.method, "depth": args.depth,
            "shots": args.shots, "n_ctx": args.n_ctx, "lr": args.lr, "epochs": args.epochs,
            "train_eps_255": args.train_eps,
            "eps_255": args.eps, "train_seconds": round(train_s, 1), "train_steps": res.steps,
            **({} if args.lam is None else {"lam": args.lam}), **clean_confidence(model, test),
            **robust_eval(model, test, args.eps / 255, args.n)}


@torch.no_grad()
def clean_confidence(model, test, n: int = 2000) -> dict:
    """How flat the tuned model's clean predictions are: mean top-class probability and mean entropy (nats;
    uniform over the classes is ``log C``) on the first ``n`` test images. The low-clean mode could be
    the prompts flattening every prediction, which satisfies a clean-vs-adversarial consistency term."""
    model.eval()
    x = torch.stack([test[i][0] for i in range(min(n, len(test)))])
    p = torch.cat([model(x[s:s + 500]).softmax(1) for s in range(0, len(x), 500)])
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    return {"clean_top_prob": round(float(p.max(1).values.mean()), 4), "clean_entropy": round(float(entropy.mean()), 3)}


def _pretrain_and_measure(args, ns, config: dict, stream_look: mw.Look | None = None, **continued) -> dict:
    """The pretraining script's loop with ``ns`` (``continued``: its ``init``/``stream_offset``), the stream in
    ``stream_look`` if given; the checkpoint written to ``--ckpt``; its zero-shot model measured on the world's
    source. Returns the record's timing and accuracy fields, and the parameter count."""
    render = mw.render
    if stream_look is not None:
        mw.render = lambda attrs, seed, look_=stream_look: render(attrs, seed, look_)
    cpu0 = time.process_time()
    try:
        model, tokenizer, seconds = pm.pretrain(ns, log=lambda s: print(s, flush=True), **continued)
    finally:
        mw.render = render
    cpu = time.process_time() - cpu0
    args.ckpt.write_bytes(pm.checkpoint_bytes(model, tokenizer, config))
    bundle = load_clip("mini", checkpoint=args.ckpt)
    test = load_dataset(source_name(args.world), "test")
    return {"pretrain_seconds": round(seconds, 1), "pretrain_cpu_seconds": round(cpu, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "eps_255": args.eps,
            **robust_eval(zero_shot(bundle, test), test, args.eps / 255, args.n)}


def probe_pretrain(args) -> dict:
    """A short pretraining of ``--arch`` (in ``--world``'s look) with the pretraining script's own loop."""
    if args.ckpt is None:
        raise SystemExit("pretrain needs --ckpt OUT.pt (where the probe checkpoint goes)")
    ns = argparse.Namespace(steps=args.steps, batch=256, lr=args.lr, wd=0.1, warmup=50, seed=0,
                            config=ARCHS[args.arch], adv_share=0.0, adv_eps=0.0)
    return {"world": args.world, "arch": args.arch, "ckpt": str(args.ckpt), "pretrain_steps": args.steps,
            **_pretrain_and_measure(args, ns, ns.config, stream_look=world_look(args.world))}


def probe_tail(args) -> dict:
    """Continued pretraining: ``--init`` (e.g. an adversarially pretrained tower) trained ``--steps`` more on
    the clean stream (batches the first pretraining never saw; ``--adv-share`` keeps a share adversarial),
    cosine lr from ``--lr``, written to ``--ckpt``: do features made robust early survive in a tower whose
    zero-shot head a clean phase makes fragile again (the gap adversarial prompt tuning needs)?"""
    from capt.mini_model import load_mini

    if args.ckpt is None or args.init is None:
        raise SystemExit("tail needs --init START.pt and --ckpt OUT.pt")
    init = load_mini(args.init)
    ns = argparse.Namespace(steps=args.steps, batch=256, lr=args.lr, wd=0.1, warmup=20, seed=7,
                            adv_share=args.adv_share, adv_eps=6 / 255)
    return {"world": args.world, "init": str(args.init), "ckpt": str(args.ckpt), "pretrain_steps": args.steps,
            "lr": args.lr, "adv_share": args.adv_share,
            **_pretrain_and_measure(args, ns, init["config"], init=init, stream_offset=500_000)}


def probe_cost(args) -> dict:
    """Median seconds per pretraining step and per attacked image of every architecture, interleaved; each
    architecture sees the same batch rendered at its own image size."""
    tok = pm.MiniTokenizer()
    xs = {}
    for size in sorted({cfg["vision_cfg"]["image_size"] for cfg in ARCHS.values()}):
        mw.set_image_size(size)
        images, texts, match, _ = mw.pretrain_batch(0, 256)
        xs[size] = pm._normalise(torch.from_numpy(images).float().div_(255))
    mw.set_image_size(mw.SCENE)
    t = tok(texts)  # the captions and matches do not depend on the image size
    m = torch.from_numpy(match).float()
    models = {a: build_mini(cfg, vocab_size=len(tok)) for a, cfg in ARCHS.items()}
    opts = {a: torch.optim.AdamW(mdl.parameters(), lr=1e-4) for a, mdl in models.items()}
    step_s = {a: [] for a in ARCHS}
    attack_s = {a: [] for a in ARCHS}
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        for a, mdl in models.items():
            x = xs[ARCHS[a]["vision_cfg"]["image_size"]]
            mdl.train()
            t0 = time.process_time()
            img = mdl.encode_image(x, normalize=True)
            txt = pm.encode_text_trimmed(mdl, t)
            loss = pm.multi_positive_loss(img, txt, mdl.logit_scale.exp(), m)
            opts[a].zero_grad(set_to_none=True)
            loss.backward()
            opts[a].step()
            t1 = time.process_time()
            mdl.eval()
            xa = x.clone().requires_grad_(True)
            out = mdl.encode_image(xa, normalize=True)
            (g,) = torch.autograd.grad(out.sum(), xa)
            t2 = time.process_time()
            if r:
                step_s[a].append(t1 - t0)
                attack_s[a].append((t2 - t1) / len(x))
    res = {}
    for a in ARCHS:
        s, p = statistics.median(step_s[a]), statistics.median(attack_s[a])
        res[a] = {"params": sum(q.numel() for q in models[a].parameters()),
                  "visual_params": sum(q.numel() for q in models[a].visual.parameters()),
                  "image_tokens": (ARCHS[a]["vision_cfg"]["image_size"] // ARCHS[a]["vision_cfg"]["patch_size"]) ** 2,
                  "cpu_s_per_pretrain_step": round(s, 3), "pretrain_3000_steps_cpu_min": round(s * 3000 / 60, 1),
                  "cpu_ms_per_attack_pass": round(1000 * p, 3)}
    for a in ARCHS:
        res[a]["step_vs_v3"] = round(res[a]["cpu_s_per_pretrain_step"] / res["v3"]["cpu_s_per_pretrain_step"], 2)
        res[a]["attack_vs_v3"] = round(res[a]["cpu_ms_per_attack_pass"] / res["v3"]["cpu_ms_per_attack_pass"], 2)
        print(a, res[a], flush=True)
    return {"rounds": args.rounds, "threads": torch.get_num_threads(), "archs": res}


def _default_lam(record: dict):
    """The lambda a prompt row trained with when it did not set one: its method's, where the objective has
    a consistency term (blank for CE-only methods)."""
    if record["probe"] != "prompt":
        return ""
    objective = get_method(record["method"]).objective
    return objective.lam if "lam" in objective.reads else ""


def probe_table(args) -> None:
    """The log's accuracy probes as one markdown table (the note's numbers come from here)."""
    cols = ("session", "probe", "world", "arch/ckpt", "method", "shots", "depth", "n_ctx", "lam", "lr", "epochs",
            "steps", "train eps",
            "test eps", "n", "seed",
            "clean (all)", "clean", "top p", "entropy", "aa", "aa passes/img", "wall s", "cpu s")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    records = [json.loads(line) for line in args.log.read_text().splitlines()]
    for r in records:
        if r["probe"] == "cost":
            continue
        ckpt = r.get("arch") or (Path(r["ckpt"]).stem if r.get("ckpt") not in (None, "None") else "v3")
        tuned = "full FT" if r.get("trainable", "all") == "all" else f"FT {r['trainable']}"
        vals = (r.get("session", 1), r["probe"], r["world"], ckpt, r.get("method", "zero-shot" if r["probe"] != "tecoa" else tuned),
                r.get("shots", 16) if r["probe"] == "prompt" else "", r.get("depth", ""), r.get("n_ctx", ""),
                r.get("lam", _default_lam(r)), r.get("lr", ""), r.get("epochs", ""),
                r.get("train_steps", r.get("pretrain_steps", "")), r.get("train_eps_255", ""), r["eps_255"], r["n"],
                r["seed"],
                r["clean_all"], r["clean"], r.get("clean_top_prob", ""), r.get("clean_entropy", ""), r["robust"],
                r["aa_passes_per_image"], r["wall_seconds"], r["cpu_seconds"])
        print("| " + " | ".join(str(v) for v in vals) + " |")
    costs = [r for r in records if r["probe"] == "cost"]
    if costs:  # the latest cost run
        c = costs[-1]
        keys = ("params", "visual_params", "image_tokens", "cpu_s_per_pretrain_step", "pretrain_3000_steps_cpu_min",
                "step_vs_v3", "cpu_ms_per_attack_pass", "attack_vs_v3")
        print(f"\ncost, {c['rounds']} rounds, {c['threads']} thread(s), {c['wall_seconds']} s wall:\n")
        print("| arch | " + " | ".join(keys) + " |")
        print("|" + "---|" * (len(keys) + 1))
        for a, v in c["archs"].items():
            print(f"| {a} | " + " | ".join(str(v[k]) for k in keys) + " |")


def probe_cards(args) -> None:
    """The candidate towers' pretraining cards (``data_scripts/pretrain_mini.py --out X.pt`` writes X.json
    beside it; the probes' copies live in ``benchmarks/mini_v4_cards/``) as one markdown table."""
    cols = ("tower", "reproduce", "parameters", "MB", "cpu min", "source", "targets mean", "shifts mean",
            "confidence mean", "below 0.5")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for path in sorted(CARDS.glob("*.json")):
        c = json.loads(path.read_text())
        z = c["report"]["zero_shot"]
        mean = lambda role: 100 * statistics.mean(v["acc"] for v in z.values() if v["role"] == role)  # noqa: E731
        conf = c["report"]["source_train_confidence"]
        vals = (path.stem, f"`{c['reproduce']}`", f"{c['parameters']:,}", round(c["size_bytes"] / 1e6, 2),
                round(c["pretrain_cpu_seconds"] / 60, 1), f"{100 * z['mini_source']['acc']:.1f}",
                f"{mean('target'):.1f}", f"{mean('shift'):.1f}", conf["mean"], conf["below_0.5"])
        print("| " + " | ".join(str(v) for v in vals) + " |")


def _set_resolution(args) -> None:
    """Render the world at the resolution of the tower being pretrained or measured (session 4's lever:
    the same scene sampled more finely, as ViT-B/32 sees 224 x 224 images where the mini CLIP saw 32 x 32)."""
    if args.probe == "pretrain":
        size = ARCHS[args.arch]["vision_cfg"]["image_size"]
    elif args.ckpt is not None or args.init is not None:
        from capt.mini_model import load_mini

        size = int(load_mini(args.ckpt if args.probe != "tail" else args.init)["config"]["vision_cfg"]["image_size"])
    else:
        size = mw.SCENE
    mw.set_image_size(size)


CARDS = ROOT / "benchmarks" / "mini_v4_cards"
PROBES = {"cards": probe_cards, "readout": probe_readout, "cost": probe_cost, "zeroshot": probe_zeroshot, "tecoa": probe_tecoa, "prompt": probe_prompt,
          "pretrain": probe_pretrain, "tail": probe_tail, "table": probe_table}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=list(PROBES))
    ap.add_argument("--world", default="v3", choices=list(WORLDS))
    ap.add_argument("--arch", default="v3", choices=list(ARCHS))
    ap.add_argument("--ckpt", type=Path, default=None, help="mini CLIP checkpoint (default: the committed v3)")
    ap.add_argument("--init", type=Path, default=None, help="tail: the checkpoint to continue")
    ap.add_argument("--adv-share", type=float, default=0.0, help="tail: adversarial share of each batch")
    ap.add_argument("--eps", type=float, default=3.0, help="test radius, in /255")
    ap.add_argument("--train-eps", type=float, default=3.0, help="training radius, in /255")
    ap.add_argument("--n", type=int, default=300, help="test images under aa (seeded fixed subset)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--method", default="advmaple")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n-ctx", type=int, default=2)
    ap.add_argument("--lam", type=float, default=None, help="prompt: the objective's lambda (default: the method's)")
    ap.add_argument("--shots", type=int, default=16, help="prompt: training images per class (200: the whole pool)")
    ap.add_argument("--epochs", type=int, default=None, help="prompt: 4; tecoa: 3")
    ap.add_argument("--lr", type=float, default=None, help="prompt: 0.01; tecoa: 1e-4; pretrain: 3e-3")
    ap.add_argument("--pool", type=int, default=20000, help="tecoa: source training images")
    ap.add_argument("--batch", type=int, default=128, help="tecoa batch")
    ap.add_argument("--trainable", default="all", help="tecoa: image-tower parameter name prefixes that learn")
    ap.add_argument("--steps", type=int, default=800, help="pretrain steps")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", type=Path, default=ROOT / "benchmarks" / "mini_v4_probe.jsonl")
    args = ap.parse_args(argv)
    defaults = {"prompt": (4, 0.01), "tecoa": (3, 1e-4), "readout": (3, 1e-3), "pretrain": (None, 3e-3),
                "tail": (None, 1e-3)}.get(args.probe, (None, None))
    args.epochs = args.epochs if args.epochs is not None else defaults[0]
    args.lr = args.lr if args.lr is not None else defaults[1]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    _set_resolution(args)
    if args.probe in ("table", "cards"):
        PROBES[args.probe](args)
        return 0
    w0, c0 = time.time(), time.process_time()
    record = PROBES[args.probe](args)
    record.update(wall_seconds=round(time.time() - w0, 1), cpu_seconds=round(time.process_time() - c0, 1))
    log_result(args, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
