"""How long indexing a user's folder takes (``folder:/abs/path``): listings and file sizes, no image decoded.

Writes a tree of empty files (indexing never opens a file, so their content does not matter) and times
:func:`capt.data.folder.build_index` on it, cold (the first listing) and warm, and the content
fingerprint of every split, and the check that a cached index is current (run at every use of the
name). The image check (each file's header opened with PIL) is a separate step that
the benchmark leaves out: empty files would fail it.

    .venv/bin/python benchmarks/bench_folder_index.py --files 100000 --classes 100
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def write_tree(root: Path, files: int, classes: int) -> None:
    for c in range(classes):
        folder = root / f"class_{c:04d}"
        folder.mkdir(parents=True)
        for i in range(c, files, classes):
            (folder / f"img_{i:06d}.jpg").touch()


def main() -> None:
    from capt.data.folder import _signature, build_index, parse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="capt-folder-bench-"))
    try:
        t = time.perf_counter()
        write_tree(root / "tree", args.files, args.classes)
        print(f"wrote {args.files} empty files in {args.classes} class folders: {time.perf_counter() - t:.1f}s")
        ref = parse(f"folder:{root / 'tree'}")
        t = time.perf_counter()
        _signature(ref)
        print(f"the cache check of a folder (its directories' times, no file listed): {time.perf_counter() - t:.3f}s")
        for r in range(args.repeats):
            t = time.perf_counter()
            index = build_index(ref)
            t_index = time.perf_counter() - t
            t = time.perf_counter()
            fps = [index.fingerprint(s) for s in index.splits]
            t_fp = time.perf_counter() - t
            print(f"run {r + 1}: index {t_index:.2f}s ({sum(len(v) for v in index.splits.values())} files, "
                  f"{len(index.classnames)} classes, split {[len(v) for v in index.splits.values()]}), "
                  f"fingerprints {t_fp:.2f}s ({fps[0][:12]}...)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
