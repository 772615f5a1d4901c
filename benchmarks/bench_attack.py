"""Benchmark of capt's AutoAttack (``aa``) against the reference AutoAttack and torchattacks' parts.

    python benchmarks/bench_attack.py speed [--n 200] [--eps E] [--steps 100] [--repeats 1] [--standard]
                                            [--method capt] [--outputs DIR] [--device cpu|cuda] [--out FILE]
    python benchmarks/bench_attack.py table [--n 200] [--seeds 1 2 3] [--methods zeroshot advmaple fap capt]
                                            [--outputs DIR] [--device cpu|cuda] [--out FILE]

``speed``: on one model (the mini CLIP with trained prompts of ``--method``, seed 1) and the same ``--n``
images of the source task, in one run (interleaved when ``--repeats`` > 1, medians):

- ``aa``: capt's APGD-CE + APGD-T (100 iterations, 9 targets) with the active set, text features cached;
- ``reference``: Croce & Hein's code (``pyautoattack``), ``version='custom'``, ``['apgd-ce', 'apgd-t']``
  with the standard version's settings (one restart, 9 targets): the same white-box part
  (``--standard``: also the whole ``version='standard'``, which adds FAB-T and Square);
- ``torchattacks``: torchattacks' APGD (CE) then APGDT (9 targets), each on the images still standing,
  driving the same :class:`capt.attacks.FixedTextClassifier`.

It reports wall time and the ratios reference / aa and torchattacks / aa (and the same in process CPU
time, steadier on a shared machine with one thread), robust accuracy of each and
per-image agreement with ``aa`` (the ratio is only meaningful at equal outcomes), and image-tower
forward+backward passes per image (counted for all three by wrapping the classifier) against the
fixed-budget floor ``steps x (1 + 9)`` (every image through every run).

``table``: per method and seed, ``aa``'s robust accuracy beside the reference's on the same images (the
check that the headline attack is AutoAttack-grade), with the per-method mean and the largest gap in
images per hundred. Runs are trained with the mini profile's settings into ``--outputs`` (default
``outputs/bench_attack``; point it at a book's outputs folder to reuse its trained runs).

Timings taken on a shared machine are noisy: say so when quoting them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import capt
from capt import plans
from capt.attacks import AttackSpec, FixedTextClassifier, make_attack


class Counting(torch.nn.Module):
    """A classifier wrapper that counts images through forward passes with and without gradients."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.fwd_bwd = self.fwd = 0

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            self.fwd_bwd += x.shape[0]
        else:
            self.fwd += x.shape[0]
        return self.inner(x)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def settings(outputs: str, device: str | None, **changes):
    from capt.notebook import Settings

    return Settings.from_profile("mini", out_dir=outputs, device=device, progress=False, **changes)


def trained_model(S, spec, n: int):
    """The run's prompted model on the source task's test split, and a fixed subset of ``n`` images."""
    from capt.evaluate import fixed_subset
    from capt.experiments import as_ref

    exp = S.experiment()
    prompts = exp.trained(spec).prompt_state_dict()
    ref = as_ref(S.source)
    data = ref.load("test", exp.data_root, exp.clip(spec).preprocess)
    model = exp.build(spec, data.classnames, data.templates)
    model.load_prompt_state_dict(prompts)
    model.eval()
    sub = fixed_subset(data, n, seed=0)
    x, y = next(iter(torch.utils.data.DataLoader(sub, batch_size=len(sub))))
    return model, x.to(exp.device), y.to(exp.device)


def run_aa(model, x, y, eps, steps, seed=0):
    atk = make_attack(AttackSpec("aa", eps=eps, steps=steps), model, seed=seed)
    atk(x, y)
    return atk.last_correct.cpu(), atk.stats.fwd_bwd / len(y)


def run_reference(model, x, y, eps, steps, seed=0, standard=False, batch_size=None):
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    clf = Counting(FixedTextClassifier(model))
    if standard:
        ref = AutoAttack(clf, version="standard", eps=eps, seed=seed, device=x.device)
    else:
        ref = AutoAttack(clf, attacks=["apgd-ce", "apgd-t"], version="custom", eps=eps, seed=seed, device=x.device)
        ref.apgd = APGDAttack(clf, n_iter=steps, n_restarts=1, eps=eps, seed=seed, rho=0.75, device=x.device)
        ref.apgd_targeted = APGDAttack_targeted(clf, n_iter=steps, n_restarts=1, eps=eps, seed=seed, rho=0.75,
                                                n_target_classes=9, device=x.device)
    ref.logger.disabled = True
    x_adv, _ = ref.run_standard_evaluation(x, y, batch_size=batch_size or len(y))
    with torch.no_grad():
        correct = (clf.inner(x_adv).argmax(1) == y).cpu()
    return correct, clf.fwd_bwd / len(y)


def run_torchattacks(model, x, y, eps, steps, seed=0):
    import torchattacks

    clf = Counting(FixedTextClassifier(model))
    n_classes = len(model.classnames)
    common = dict(norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed)
    apgdt = torchattacks.APGDT(clf, n_classes=n_classes, **common)
    apgdt.n_target_classes = min(9, n_classes - 1)
    atk = torchattacks.MultiAttack([torchattacks.APGD(clf, loss="ce", **common), apgdt])
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        x_adv = atk(x, y)
    with torch.no_grad():
        correct = (clf.inner(x_adv).argmax(1) == y).cpu()
    return correct, clf.fwd_bwd / len(y)


def speed(args) -> list[dict]:
    S = settings(args.outputs, args.device)
    spec = plans.runs(S, methods=[args.method], seeds=[1])[0]
    model, x, y = trained_model(S, spec, args.n)
    eps = args.eps / 255
    fns = {"aa": lambda: run_aa(model, x, y, eps, args.steps),
           "reference": lambda: run_reference(model, x, y, eps, args.steps),
           "torchattacks": lambda: run_torchattacks(model, x, y, eps, args.steps)}
    if args.standard:
        fns["reference standard"] = lambda: run_reference(model, x, y, eps, args.steps, standard=True)
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}  # process CPU time: with one thread, a fairer measure on a shared machine
    out = {}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            _sync()
            t0, c0 = time.perf_counter(), time.process_time()
            out[k] = fn()
            _sync()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    with torch.no_grad():
        clean = (FixedTextClassifier(model)(x).argmax(1) == y).cpu()
    floor = args.steps * (1 + min(9, len(model.classnames) - 1))
    mine = out["aa"][0]
    rows = []
    for k in fns:
        correct, passes = out[k]
        t = statistics.median(times[k])
        c = statistics.median(cpu[k])
        rows.append({"attack": k, "seconds": t, "ratio_to_aa": t / statistics.median(times["aa"]),
                     "cpu_seconds": c, "cpu_ratio_to_aa": c / statistics.median(cpu["aa"]),
                     "robust_acc": 100.0 * float(correct.float().mean()),
                     "agree_with_aa": 100.0 * float((correct == mine).float().mean()),
                     "passes_per_image": passes, "floor_over_passes": floor / passes if passes else float("nan")})
    print(f"model: mini CLIP, {args.method} prompts (seed 1); {len(y)} images of {S.source}; eps {args.eps}/255; "
          f"{args.steps} iterations; clean {100 * float(clean.float().mean()):.1f} %; device {x.device}; "
          f"threads {torch.get_num_threads()}; fixed-budget floor {floor} passes per image")
    return rows


def table(args) -> list[dict]:
    S = settings(args.outputs, args.device)
    eps = args.eps / 255
    rows = []
    for spec in plans.runs(S, methods=args.methods, seeds=args.seeds):
        model, x, y = trained_model(S, spec, args.n)
        with torch.no_grad():
            clean = (FixedTextClassifier(model)(x).argmax(1) == y).cpu()
        mine, _ = run_aa(model, x, y, eps, args.steps)
        theirs, _ = run_reference(model, x, y, eps, args.steps, standard=args.standard)
        rows.append({"method": spec.method, "seed": spec.seed if spec.trains else 0, "n": len(y),
                     "clean": 100.0 * float(clean.float().mean()), "aa": 100.0 * float(mine.float().mean()),
                     "reference": 100.0 * float(theirs.float().mean()),
                     "gap_images_per_100": 100.0 * abs(int(mine.sum()) - int(theirs.sum())) / len(y),
                     "per_image_agreement": 100.0 * float((mine == theirs).float().mean())})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["speed", "table"])
    p.add_argument("--n", type=int, default=200, help="images (a fixed seeded subset of the source test split)")
    p.add_argument("--eps", type=float, default=None,
                   help="L-inf radius in /255 units (default: the mini profile's eval_eps)")
    p.add_argument("--steps", type=int, default=100, help="iterations per APGD run (the standard: 100)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--standard", action="store_true",
                   help="speed: also time the reference's whole version='standard'; table: compare against it")
    p.add_argument("--method", default="capt", help="speed: whose trained prompts to attack")
    p.add_argument("--methods", nargs="+", default=["zeroshot", "advmaple", "fap", "capt"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--outputs", default="outputs/bench_attack", help="where runs are trained (or already are)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--out", default=None, help="also write the rows to this .csv or .md file")
    args = p.parse_args(argv)
    if args.eps is None:
        from capt.notebook import Settings

        args.eps = round(Settings.from_profile("mini").eval_eps * 255, 6)
    torch.set_num_threads(args.threads)
    rows = speed(args) if args.mode == "speed" else table(args)
    import pandas as pd

    df = pd.DataFrame(rows)
    if args.mode == "table":
        agg = df.groupby("method", sort=False).agg(seeds=("seed", "count"), n=("n", "first"), clean=("clean", "mean"),
                                                   aa=("aa", "mean"), reference=("reference", "mean"),
                                                   max_gap_images_per_100=("gap_images_per_100", "max"),
                                                   per_image_agreement=("per_image_agreement", "mean"))
        print(agg.round(2).to_markdown() if _has_tabulate() else agg.round(2).to_string())
        df = pd.concat([df, agg.reset_index().assign(seed="mean")], ignore_index=True)
    else:
        print(df.round(3).to_markdown(index=False) if _has_tabulate() else df.round(3).to_string(index=False))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".md" and _has_tabulate():
            path.write_text(df.round(3).to_markdown(index=False) + "\n")
        else:
            df.to_csv(path, index=False)
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
