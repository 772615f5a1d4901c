"""nbval really guards the committed notebooks: change one reported number and the check fails.

A copy of the cheapest committed notebook (zero-shot robustness, no training) gets one digit of its
generated reading changed; ``pytest --nbval`` on the copy must then fail on exactly that cell while every
other cell still passes, which also shows the copy itself runs cleanly outside the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_zeroshot_robustness.ipynb"
SANITIZE = ROOT / "notebooks" / "nbval_sanitize.cfg"


def _tamper(nb) -> tuple[int, str, str]:
    """Change the first digit after the point of the first percentage in a generated reading (its
    text/plain and text/markdown alike); return (code-cell index, old, new text). nbval numbers the
    code cells only."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = data.get("text/markdown", "")
            m = re.search(r"(\d+)\.(\d) %", text)
            if m:
                old = m.group(0)
                new = f"{m.group(1)}.{(int(m.group(2)) + 1) % 10} %"
                for mime in ("text/markdown", "text/plain"):
                    data[mime] = data[mime].replace(old, new, 1)
                return i, old, new
    raise AssertionError(f"{NOTEBOOK.name} shows no generated reading with a percentage to tamper with")


def _nbval(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    # the store and figures go to CAPT_HOME/outputs/ci, inside cwd; capt is imported from this checkout
    env = {**os.environ, "CAPT_HOME": str(cwd), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", str(path),
                           "--nbval-sanitize-with", str(SANITIZE), "-o", "addopts="],
                          cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def test_changing_a_reported_number_fails_nbval(tmp_path):
    work = tmp_path / "notebooks"
    work.mkdir()
    copy = work / NOTEBOOK.name
    nb = nbformat.read(NOTEBOOK, as_version=4)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    index, old, new = _tamper(nb)
    nbformat.write(nb, copy)
    shutil.copy(SANITIZE, work / SANITIZE.name)

    result = _nbval(copy, tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-4000:]
    # exactly the tampered cell fails; the others (same kernel, same data) still match their outputs
    assert re.search(rf"\b1 failed, {n_code - 1} passed\b", log), log[-4000:]
    assert f"Cell {index}" in log or f"cell {index}" in log.lower(), log[-4000:]
    assert old in log and new in log, log[-4000:]
