"""The ``capt`` command.

    capt run PROFILE [--only NB ...] [--output-dir DIR] [--set KEY=YAML ...]   execute the book's notebooks
    capt book [--profile mini] [--no-run] [--workers N]                         run them, then build the HTML book
    capt data list|status|prepare ...                                           the real datasets
    capt sweep PROFILE [--engine local|pool|slurm|debug] [--workers N] ...      every run of a profile, in parallel
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def _overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise SystemExit(f"capt: --set takes KEY=VALUE (VALUE in YAML, e.g. seeds=[1,2]), got {p!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise SystemExit(f"capt: --set {key.strip()}: {value!r} is not valid YAML "
                             f"({' '.join(str(exc).split())})") from None
    if out:  # a misspelt name would otherwise be dropped silently and the defaults run
        from .notebook import Settings

        try:
            Settings.check_names(out, "--set")
        except ValueError as exc:
            raise SystemExit(f"capt: {exc}") from None
    return out


def _run(args) -> int:
    from .runner import run_profile

    run_profile(args.profile, args.output_dir, only=args.only, overrides=_overrides(args.set))
    return 0


def jupyter_book_build(root: Path) -> list[str]:
    """The command that builds the book of the source tree ``root`` into ``root/_build``, with the
    ``jupyter-book`` beside this Python (the project's .venv) when there is one."""
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "--path-output", str(root)]


def _book(args) -> int:
    from .paths import checkout
    from .runner import run_profile

    ROOT = checkout()
    if ROOT is None:
        raise SystemExit("capt book builds the book of a source checkout (git clone ...); run it there")
    t0 = time.perf_counter()
    overrides = _overrides(args.set)
    if not args.no_run:
        _prefill(args.profile, overrides, args.workers)
        run_profile(args.profile, ROOT / "book" / "experiments", overrides=overrides)
    write_book_pages(args.profile, overrides, ROOT / "book" / "experiments")
    print(f"building the book (Jupyter Book, Sphinx) ...", flush=True)
    cmd = jupyter_book_build(ROOT)
    if args.strict:
        cmd += ["-W", "-n", "--keep-going"]
    rc = subprocess.call(cmd)
    if rc == 0:
        print(f"book ready: {ROOT / '_build' / 'html' / 'index.html'} ({time.perf_counter() - t0:.0f}s in all)")
    return rc


def _prefill(profile, overrides: dict, workers: int | None) -> None:
    """Before the notebooks run, a pool sweep trains and evaluates everything they will ask for, with
    ``workers`` one-thread processes (default: one per core on a CPU, none with a GPU, where the
    notebooks compute in their own process). The notebooks then only render from the store; whatever
    the sweep could not finish, they compute themselves."""
    import os

    if workers is None:
        import torch

        workers = 0 if torch.cuda.is_available() else (os.cpu_count() or 1)
    if workers < 2:
        return
    from .sweep import sweep

    report = sweep(profile, overrides=overrides, engine="pool", workers=workers, cpus_per_worker=1)
    for o in report.failed:
        print(f"capt: run {o.task.name} failed in the sweep ({o.attempts} attempts); its notebook computes it "
              f"(logs: {report.folder})", file=sys.stderr)


def write_glance(profile, overrides: dict, path: Path) -> Path:
    """The intro's results-at-a-glance, generated from the chapters' saved rows of this profile."""
    from . import report
    from .chapters import CHAPTERS
    from .notebook import Settings

    found = {}
    for chapter in (c for c in CHAPTERS.values() if c.focus is not None):
        S = Settings.from_profile(profile, chapter.name, **overrides)
        found[chapter.name] = (S, S.output / "tables" / chapter.table)
    # a chapter is named by its title, linked, where its executed notebook sits beside the glance
    titles = {c: CHAPTERS[c].title for c in found if Path(path).with_name(f"{c}.ipynb").is_file()}
    return report.write_glance(found, path, titles=titles)


def write_book_pages(profile, overrides: dict, experiments: Path) -> None:
    """What the build generates beside the executed chapters in ``experiments``: the intro's glance, each
    chapter's results table for download, and the execution-statistics page."""
    import shutil

    from . import execution
    from .chapters import CHAPTERS
    from .notebook import Settings

    write_glance(profile, overrides, experiments / "glance.md")
    stores = []
    for chapter in CHAPTERS.values():
        if not (experiments / f"{chapter.name}.ipynb").is_file():
            continue
        S = Settings.from_profile(profile, chapter.name, **overrides)
        stores.append(S.output)
        table = S.output / "tables" / chapter.table
        if table.is_file():
            shutil.copyfile(table, experiments / f"{chapter.name}_results.csv")
    execution.write_page(sorted(experiments.glob("[0-9][0-9]_*.ipynb")), stores, experiments / "execution.md")
    write_subsets(stores, experiments)


def write_subsets(stores, experiments: Path) -> Path:
    """Copy the fixed evaluation subsets' index files of ``stores`` (``<store>/subsets/``) into
    ``experiments/subsets/`` and list them, as downloads, for the reproducibility page."""
    import shutil

    from .io import atomic_write_text

    files = sorted({f.name: f for s in stores for f in sorted((Path(s) / "subsets").glob("*.csv"))}.items())
    lines = []
    if files:
        (experiments / "subsets").mkdir(exist_ok=True)
    for name, f in files:
        shutil.copyfile(f, experiments / "subsets" / name)
        lines.append(f"- {{download}}`{name} </book/experiments/subsets/{name}>`")
    text = ("\n".join(lines) + "\n") if lines else "*No evaluation ran for this build, so no subset was drawn.*\n"
    return atomic_write_text(experiments / "subsets.md", text)


def _sweep(args) -> int:
    from .sweep import sweep

    report = sweep(args.profile, only=args.only, overrides=_overrides(args.set), engine=args.engine,
                   workers=args.workers, gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                   retries=args.retries, partition=args.partition, timeout_min=args.timeout_min, mem_gb=args.mem_gb,
                   log_dir=args.log_dir, dry_run=args.dry_run)
    for o in report.failed:
        print(f"capt: run {o.task.name} failed after {o.attempts} attempts; logs: {report.folder}", file=sys.stderr)
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:
        from capt.data.cli import main as data_main

        return data_main(argv[1:])
    parser = argparse.ArgumentParser(prog="capt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute the book's notebooks with a profile's parameters (papermill)")
    r.add_argument("profile", help="profile name in profiles/ (mini, ci, paper) or a .yaml path")
    r.add_argument("--only", nargs="+", help="notebook names (default: all)")
    r.add_argument("--output-dir", default="outputs/notebooks",
                   help="where executed notebooks go (relative paths: in the checkout, or $CAPT_HOME)")
    r.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="override settings (YAML values, e.g. seeds=[1] eval_eps=4/255); names: capt.notebook.Settings")
    r.set_defaults(func=_run)
    b = sub.add_parser("book", help="run every notebook with a profile, then build the HTML book")
    b.add_argument("--profile", default="mini")
    b.add_argument("--no-run", action="store_true", help="build from the notebooks already in book/experiments")
    b.add_argument("--strict", action="store_true", help="turn Sphinx warnings into errors")
    b.add_argument("--workers", type=int, help="one-thread worker processes that train and evaluate every run "
                                               "before the notebooks render (default: one per core on a CPU, "
                                               "0 with a GPU; 0 or 1: the notebooks compute in turn)")
    b.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override parameters (YAML values)")
    b.set_defaults(func=_book)
    sub.add_parser("data", help="datasets: list, status, prepare (see `capt data -h`)")
    w = sub.add_parser("sweep", help="train and evaluate every run of a profile in parallel (submitit: local "
                                     "workers or SLURM), filling the results store the notebooks read")
    w.add_argument("profile", help="profile name in profiles/ (mini, ci, paper) or a .yaml path")
    w.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="only the runs of these notebooks (default: all)")
    w.add_argument("--engine", default="local", choices=["local", "pool", "slurm", "debug"],
                   help="local: workers on this machine (one per visible GPU, else CPU workers), a fresh process "
                        "per run; pool: the same workers kept alive across runs; slurm: a job array; debug: one "
                        "after the other in this process (default: local)")
    w.add_argument("--workers", type=int, help="local/pool: number of workers (default: visible GPUs / "
                                               "gpus-per-worker, else half the CPU cores (pool: every core)); "
                                               "slurm: most jobs at once")
    w.add_argument("--gpus-per-worker", type=int, default=1, help="GPUs per worker or SLURM job (default: 1)")
    w.add_argument("--cpus-per-worker", type=int, help="CPU threads per worker (local default: cores / workers; "
                                                       "SLURM default: 8)")
    w.add_argument("--retries", type=int, default=2, help="resubmit a failed run at most this many times (default: 2)")
    w.add_argument("--partition", help="SLURM partition")
    w.add_argument("--timeout-min", type=int, help="time limit per run in minutes (SLURM default: 720; a run that "
                                                   "hits it is requeued and resumes from its checkpoint)")
    w.add_argument("--mem-gb", type=float, help="SLURM memory per job in GB")
    w.add_argument("--log-dir", help="submitit's job files and logs (default: OUT_DIR/sweep; on SLURM it must be "
                                     "on a shared file system)")
    w.add_argument("--dry-run", action="store_true", help="count the runs and what is left to do; submit nothing")
    w.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override parameters (YAML values)")
    w.set_defaults(func=_sweep)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"capt: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
