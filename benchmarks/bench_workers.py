"""One process with N threads against N one-thread processes, on the same mini evaluation work.

Why ``capt book`` fills the store through a pool of one-thread workers on a CPU: the mini CLIP's
operations are too small for a second thread to pay off. The work: the zero-shot mini CLIP under
``aa`` and PGD-10 (the book's radius) on a fixed subset of every target, split between the processes
by dataset; each configuration uses a fresh results store, and the two alternate ``--repeats`` times
(medians reported). Run it alone::

    python benchmarks/bench_workers.py --threads 2 --n 100 --repeats 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time


def _work(args):
    datasets, threads, out_dir, n = args
    import torch

    torch.set_num_threads(threads)
    from capt import plans
    from capt.notebook import Settings

    S = Settings.from_profile("mini", chapter="04_cross_dataset", methods=["zeroshot"], seeds=[1],
                              targets=list(datasets), out_dir=out_dir, max_n=n, aa_n=n)
    jobs = plans.cross_dataset(S)
    t0 = time.perf_counter()
    S.experiment().run_jobs(jobs)
    return time.perf_counter() - t0


def measure(threads: int, n: int, processes: int, datasets: list[str]) -> float:
    """Wall seconds for the whole work: one process with ``threads`` threads, or ``processes`` one-thread
    processes (started before the clock, so both sides pay only the work)."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as out:
        if processes == 1:
            with ctx.Pool(1) as pool:
                pool.apply(_work, ((datasets[:1], threads, out + "/warm", 10),))  # imports, world, model
                t0 = time.perf_counter()
                pool.apply(_work, ((datasets, threads, out + "/run", n),))
                return time.perf_counter() - t0
        parts = [datasets[i::processes] for i in range(processes)]
        with ctx.Pool(processes) as pool:
            pool.map(_work, [(p[:1], 1, f"{out}/warm{i}", 10) for i, p in enumerate(parts)])
            t0 = time.perf_counter()
            pool.map(_work, [(p, 1, f"{out}/run{i}", n) for i, p in enumerate(parts)])
            return time.perf_counter() - t0


def main() -> None:
    from capt.notebook import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="cores to use: N threads, or N one-thread processes")
    ap.add_argument("--n", type=int, default=100, help="images per target under each attack")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    datasets = list(Settings.from_profile("mini").targets)
    one, many = [], []
    for _ in range(a.repeats):  # interleaved, so a slower moment of the machine hits both
        one.append(measure(a.threads, a.n, 1, datasets))
        many.append(measure(a.threads, a.n, a.threads, datasets))
    m1, m2 = statistics.median(one), statistics.median(many)
    print(f"{len(datasets)} targets x {a.n} images, zero-shot, aa + PGD-10")
    print(f"1 process x {a.threads} threads: {m1:.1f} s (runs {', '.join(f'{x:.1f}' for x in one)})")
    print(f"{a.threads} processes x 1 thread: {m2:.1f} s (runs {', '.join(f'{x:.1f}' for x in many)})")
    print(f"speed-up of the processes: {m1 / m2:.2f}x")


if __name__ == "__main__":
    main()
