"""Smoke test of the GPU check on the CPU: it says it is not a GPU measurement and runs the tiny stand-in."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("capt_gpu_check", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_stand_in_runs_every_check_and_says_what_it_is(gpu_check, capsys, tmp_path):
    out = tmp_path / "rows.json"
    assert gpu_check.main(["--tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NOT a GPU measurement" in printed and "| check | batch |" in printed
    import json

    rows = json.loads(out.read_text())["rows"]
    checks = [r["check"] for r in rows]
    assert checks[:3] == ["train step capt", "train step advmaple", "PGD-3"] and len(rows) == 4
    assert all(math.isfinite(r["seconds"]) and r["seconds"] > 0 for r in rows)
    assert all(0 <= r["accuracy"] <= 100 for r in rows[2:])
    from capt.attacks import ATTACKS

    assert ("fallback" in checks[3]) == ("aa" not in ATTACKS)  # the table says when the strong attack is a stand-in


def test_agreement_is_the_share_of_equal_outcomes(gpu_check):
    # Two precisions are only compared on CUDA; the check's own agreement function is tested here directly.
    a, b = torch.tensor([True, True, False, False]), torch.tensor([True, False, False, True])
    assert gpu_check.agreement(a, b) == 50.0  # equal outcomes, not equal successes (that would be 25)
    assert gpu_check.agreement(a, a) == 100.0 and gpu_check.agreement(a, ~a) == 0.0
    assert gpu_check.agreement(torch.tensor([False] * 3), torch.tensor([True, False, False])) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="outcomes of different images"):
        gpu_check.agreement(a, b[:3])
    text = gpu_check.table([{"check": "x", "batch": 2, "precision": "bf16", "seconds": 1.0, "peak_gib": 2.5,
                             "accuracy": 10.0, "agreement": 50.0}])
    assert text.splitlines()[-1] == "| x | 2 | bf16 | 1.000 | 2.50 | 10.0 | 50.0 |"
