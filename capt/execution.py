"""How the book was run: each chapter's wall time, the sweep's runs by kind, the machine and versions.

Nothing here is typed: ``capt run`` stamps each executed notebook with :func:`machine`, the machine and
versions that ran it (``capt.runner.finish_notebook``; papermill already records each cell's and the
notebook's duration there), the sweep writes its report (``<out_dir>/sweep/report-*.json``) with each
run's seconds, and :func:`write_page` turns those records and the results store into the book's
execution-statistics page at build time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd

KEY = "capt_execution"  # the notebook metadata field that holds :func:`machine` of the run


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _commit() -> str:
    from .paths import checkout

    root = checkout()
    if root is None:
        return "not a checkout"
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (with local changes)' if dirty else ''}" if head else "unknown"


def machine() -> dict:
    """The machine and versions of this process: CPU model and cores, GPU (if any), python, torch, capt commit."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "capt_commit": _commit(), "host_os": f"{platform.system()} {platform.release()}"}


def chapter_rows(notebooks) -> pd.DataFrame:
    """One row per executed notebook: its wall time (papermill's record) and the machine it recorded."""
    out = []
    for path in sorted(map(Path, notebooks)):
        meta = json.loads(Path(path).read_text()).get("metadata", {})
        pm, where = meta.get("papermill", {}), meta.get(KEY, {})
        params = pm.get("parameters", {})
        out.append({"chapter": path.stem, "profile": params.get("profile", "–"),
                    "wall time": _duration(pm.get("duration")), "finished": (pm.get("end_time") or "–")[:19],
                    "machine": _machine_cell(where), "versions": _versions_cell(where)})
    return pd.DataFrame(out)


def sweep_rows(folder: str | os.PathLike) -> tuple[pd.DataFrame, dict | None]:
    """The latest sweep report in ``folder``: its runs grouped by kind (the method trained or evaluated),
    and the report's summary; (empty, None) when no sweep ran."""
    reports = sorted(Path(folder).glob("report-*.json"))
    if not reports:
        return pd.DataFrame(), None
    data = json.loads(reports[-1].read_text())
    done = [o for o in data.get("outcomes", []) if o.get("status") == "done" and o.get("result")]
    frame = pd.DataFrame([{"kind": o["name"].split("-", 1)[0], "seconds": o["result"]["seconds"],
                           "machine": f"{o['result'].get('host', '?')}, {o['result'].get('device', '?')}, "
                                      f"{o['result'].get('threads', '?')} thread(s)"} for o in done])
    if frame.empty:
        return frame, data
    table = frame.groupby("kind", sort=False).agg(runs=("seconds", "size"), total=("seconds", "sum"),
                                                  median=("seconds", "median"), machine=("machine", "first"))
    table = table.reset_index()
    table["total"] = table["total"].map(_duration)
    table["median"] = table["median"].map(_duration)
    table = table.rename(columns={"kind": "run kind", "total": "wall time (sum)", "median": "median per run"})
    return table, data


def store_rows(folder: str | os.PathLike) -> int | None:
    """How many rows the results store in ``folder`` holds (None: no store there)."""
    path = Path(folder) / "results.csv"
    if not path.is_file():
        return None
    return len(pd.read_csv(path, usecols=[0]))


def time_by_stage(folder: str | os.PathLike) -> pd.DataFrame:
    """Where a results store's compute went: the runs' training (their histories' per-step seconds) and
    each attack kind's evaluations (the rows' seconds), with the tower passes each evaluated image cost.
    Robust images are what make the strong attacks dear: ``aa`` spends ~1,000 passes on an image that
    survives and a few dozen on one that falls."""
    from .attacks import kind_of_label

    folder = Path(folder)
    path = folder / "results.csv"
    if not path.is_file():
        return pd.DataFrame()
    rows = pd.read_csv(path, usecols=lambda c: c in ("attack", "n", "seconds", "passes"))
    if set(rows.columns) != {"attack", "n", "seconds", "passes"}:  # a store from before rows carried costs
        return pd.DataFrame()
    kinds = [kind_of_label(a) for a in rows["attack"]]
    rows["stage"] = [("evaluation: " + (k.name if k is not None else a)) for k, a in zip(kinds, rows["attack"])]
    # passes are counted by capt's own attacks; torchattacks' and the reference code's are not
    uncounted = {"evaluation: " + k.name for k in kinds if k is not None and k.impl != "capt"}
    stages = rows.groupby("stage").agg(seconds=("seconds", "sum"), images=("n", "sum"),
                                       passes=("passes", lambda p: float((p * rows.loc[p.index, "n"]).sum())))
    stages["per image"] = (stages["passes"] / stages["images"]).round(1)
    train = sum(float(pd.read_csv(h, usecols=["seconds"])["seconds"].sum())
                for h in (folder / "runs").glob("*/history.csv"))
    table = pd.concat([pd.DataFrame({"seconds": [train], "images": [None], "per image": [None]},
                                    index=["training (all runs)"]),
                       stages[["seconds", "images", "per image"]]])
    total = float(table["seconds"].sum())
    table["share"] = [f"{100 * v / total:.0f} %" if total else "–" for v in table["seconds"]]
    table = table.sort_values("seconds", ascending=False)
    table["seconds"] = table["seconds"].map(_duration)
    table["images"] = [("–" if v is None or v != v else f"{int(v):,}") for v in table["images"]]
    table["per image"] = ["–" if v is None or v != v else ("not counted" if stage in uncounted else f"{v:g}")
                          for stage, v in zip(table.index, table["per image"])]
    table = table.reset_index().rename(columns={"index": "stage", "seconds": "worker time",
                                                "images": "images evaluated",
                                                "per image": "tower passes per image"})
    return table[["stage", "worker time", "share", "images evaluated", "tower passes per image"]]


def write_page(notebooks, store_dirs, path: str | os.PathLike) -> Path:
    """The execution-statistics page (Markdown, included by book/execution.md), from the records of the
    executed ``notebooks``, the sweep reports and results stores in ``store_dirs``."""
    from .io import atomic_write_text
    from .report import markdown_table

    parts = []
    chapters = chapter_rows(notebooks)
    if chapters.empty:
        parts.append("*No executed chapter was found for this build.*")
    else:
        parts.append("**Chapters.** Each chapter's wall time as papermill recorded it (the notebook renders from "
                     "the results store, and computes whatever the sweep left), and the machine and versions "
                     "that executed it.\n\n" + markdown_table(chapters))
    for folder in dict.fromkeys(map(Path, store_dirs)):
        runs, report = sweep_rows(folder / "sweep")
        rows = store_rows(folder)
        lines = [f"**Results store `{folder.name}`.** "
                 + (f"{rows} rows (`results.csv`)." if rows is not None else "no results store in this build.")]
        if report is None:
            lines.append("No sweep report: the notebooks computed their runs themselves (or read them from an "
                         "earlier store).")
        else:
            lines.append(f"Its latest sweep: {report['tasks']} runs, {report['skipped']} already complete, "
                         f"{_duration(report['seconds'])} wall in all; the runs it computed, by kind:")
            if not runs.empty:
                lines.append("\n" + markdown_table(runs))
        stages = time_by_stage(folder)
        if not stages.empty:
            lines.append("\nWhere the worker time went (training steps from the runs' histories; each attack's "
                         "evaluations from the store's rows; a tower pass is one image forward and backward through "
                         "the image tower; torchattacks' attacks do not report theirs):\n\n"
                         + markdown_table(stages))
        parts.append("\n".join(lines))
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return Path(path)


def _duration(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and seconds != seconds):
        return "–"
    s = float(seconds)
    if s < 59.95:
        return f"{s:.1f} s"
    whole = round(s)  # round first: 179.6 s is "3 min 0 s", never "2 min 60 s"
    return f"{whole // 60} min {whole % 60} s"


def _machine_cell(where: dict) -> str:
    if not where:
        return "not recorded"
    gpu = where.get("gpu") or "no GPU"
    return f"{where.get('cpu', '?')}, {where.get('cores', '?')} cores, {gpu}"


def _versions_cell(where: dict) -> str:
    if not where:
        return "not recorded"
    return f"python {where.get('python')}, torch {where.get('torch')}, capt {where.get('capt_commit')}"


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(machine(), indent=1), file=sys.stdout)
