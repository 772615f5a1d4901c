"""nbval really guards the committed notebooks: change one reported number and the check fails.

A copy of the cheapest committed notebook (zero-shot robustness, no training) gets one digit of its printed
summary changed; ``pytest --nbval`` on the copy must then fail on exactly that cell while every other cell
still passes, which also shows the copy itself runs cleanly outside the repository.
"""

from __future__ import annotations

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
    """Change the first digit of the first printed percentage; return (code-cell index, old, new text).
    nbval numbers the code cells only."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            m = re.search(r"(\d+)\.(\d)%", text)
            if m and out.get("name") == "stdout":
                old = m.group(0)
                digit = int(m.group(2))
                new = f"{m.group(1)}.{(digit + 1) % 10}%"
                out["text"] = text.replace(old, new, 1)
                return i, old, new
    raise AssertionError(f"{NOTEBOOK.name} prints no percentage to tamper with")


def _nbval(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", str(path),
                           "--nbval-sanitize-with", str(SANITIZE), "-o", "addopts="],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


def test_changing_a_reported_number_fails_nbval(tmp_path):
    # The notebook writes to ../outputs/ci relative to itself: keep it inside tmp_path.
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
