"""``capt data list | status | prepare``: what datasets exist, which are on disk, and fetching them.

The data root is ``--root``, else the environment variable ``CAPT_DATA``, else ``./data``.
``data_scripts/prepare_data.py NAME --root DATA`` runs the same code as ``capt data prepare``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_NOT_READY, EXIT_USAGE = 0, 1, 2


def _root(args) -> Path:
    from .real import default_data_root

    return Path(args.root).expanduser() if args.root else default_data_root()


def _classes(spec) -> str:
    from .real import REAL_DATASETS

    if spec.name in REAL_DATASETS:
        n = REAL_DATASETS[spec.name].n_classes
        return f"{n} (subset on disk)" if spec.name in ("imagenet_a", "imagenet_r") else str(n)
    try:  # datasets held in memory (the mini world) are cheap to build
        return str(spec.build(spec.splits[-1], None, None).num_classes)
    except Exception:  # noqa: BLE001 - a listing must not fail because one builder does
        return "?"


def cmd_list(args) -> int:
    from .registry import dataset_names, get_spec

    rows = [("name", "kind", "role", "classes", "splits", "description")]
    for name in dataset_names(kind=args.kind):
        spec = get_spec(name)
        role = spec.role + (f" of {spec.shift_of}" if spec.shift_of else "")
        rows.append((name, spec.kind, role, _classes(spec), ",".join(spec.splits), spec.description))
    _print_table(rows)
    return EXIT_OK


def cmd_status(args) -> int:
    from .real import REAL_DATASETS
    from .status import dataset_status

    root = _root(args)
    names = args.names or list(REAL_DATASETS)
    for name in names:
        if name not in REAL_DATASETS:
            print(f"error: unknown real dataset {name!r}; valid choices: {', '.join(REAL_DATASETS)}",
                  file=sys.stderr)
            return EXIT_USAGE
    print(f"data root: {root.resolve()}{'' if root.is_dir() else '  (does not exist)'}")
    rows = [("name", "state", "classes", "images", "expected (CoOp)", "path")]
    details = []
    all_ready = True
    for name in names:
        st = dataset_status(name, root)
        all_ready &= st["state"] == "ready"
        images = " ".join(f"{k}={v}" for k, v in st["counts"].items()) or "-"
        expected = " ".join(f"{k}={v}" for k, v in st["expected"].items())
        rows.append((name, st["state"], str(st["classes"] or "-"), images, expected, st["path"]))
        if st["state"] == "partial":
            details.append(f"{name}: {st['detail']}")
    _print_table(rows)
    for line in details:
        print(line)
    if not all_ready:
        print(f"prepare a dataset with: capt data prepare NAME --root {root}")
    return EXIT_OK if all_ready or not args.strict else EXIT_NOT_READY


def cmd_prepare(args) -> int:
    from .download import RECIPES, prepare
    from .transfer import ChecksumError, DownloadError, UnsafeArchiveError

    root = _root(args)
    names = list(RECIPES) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in RECIPES:
        print(f"error: unknown real dataset {args.name!r}; valid choices: {', '.join(RECIPES)}, all",
              file=sys.stderr)
        return EXIT_USAGE
    failed = []
    for name in names:
        try:
            status = prepare(name, root, mirror=args.mirror, keep_archives=args.keep_archives,
                             progress=not args.quiet)
        except (DownloadError, ChecksumError, UnsafeArchiveError, ValueError, OSError) as exc:
            text = str(exc)
            print(f"error: {text if text.startswith(name + ':') else name + ': ' + text}", file=sys.stderr)
            failed.append(name)
            continue
        if status["state"] != "ready":
            failed.append(name)
    if failed:
        print(f"not ready: {', '.join(failed)}", file=sys.stderr)
        return EXIT_NOT_READY
    return EXIT_OK


def build_parser(prog: str = "capt data") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,status,prepare}")

    p = sub.add_parser("list", help="every registered dataset: kind, role, classes")
    p.add_argument("--kind", choices=["real", "mini"], help="only this kind")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", help="which real datasets are missing, partial or ready under the root")
    p.add_argument("names", nargs="*", help="datasets to check (default: all real ones)")
    p.add_argument("--root", help="data root (default: $CAPT_DATA or ./data)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 unless every one is ready")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("prepare", help="download, verify and lay out a real dataset ('all': every one)")
    add_prepare_arguments(p)
    p.set_defaults(func=cmd_prepare)
    return parser


def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a real dataset (see `capt data list --kind real`) or 'all'")
    p.add_argument("--root", help="data root (default: $CAPT_DATA or ./data)")
    p.add_argument("--mirror", help="base URL (http://... or file:///...) serving every file under its own name")
    p.add_argument("--keep-archives", action="store_true",
                   help="keep the downloaded archives in ROOT/.downloads/ (default: remove once the dataset is ready)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _print_table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on -h and on usage errors; return its code instead
        return int(exc.code or 0)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
