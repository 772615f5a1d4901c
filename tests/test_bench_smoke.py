"""Smoke run of the benchmark functions with the tiny model: they run and return sane positive numbers.

No timing assertions: only that every figure is finite and positive and accuracies are percentages.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import capt
from conftest import make_tiny_clip

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("capt_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(bench):
    classnames = ["cat", "dog", "car", "tree", "boat"]
    torch.manual_seed(0)
    bundle = make_tiny_clip()
    model = capt.PromptedCLIP(bundle, classnames, prompt="maple", n_ctx=2, depth=2).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=g)
    labels = torch.randint(0, len(classnames), (8,), generator=g)
    return model, bench.TensorSet(images, labels, classnames, name="tiny"), bench.full_context_twin(bundle, model)


def _sane(rows):
    assert rows
    for r in rows:
        assert r["a_s"] > 0 and math.isfinite(r["a_s"])
        assert r["b_s"] > 0 and math.isfinite(r["b_s"])
        assert math.isnan(r["ratio"]) or (r["ratio"] > 0 and math.isfinite(r["ratio"]))


def test_bench_attacks(bench, setup):
    model, data, _ = setup
    rows = bench.bench_attacks(model, data.images[:4], data.labels[:4], steps=2, repeats=1)
    _sane(rows)
    assert {r["measure"] for r in rows} == {"pgd_vs_passes", "pgd_vs_torchattacks"}
    acc = rows[1]
    for k in ("acc_clean", "acc_capt_pgd", "acc_ta_pgd"):
        assert 0 <= acc[k] <= 100


def test_bench_text_context(bench, setup):
    model, _, full = setup
    assert full.prompt_tokens.shape[1] == 77 > model.prompt_tokens.shape[1]
    (row,) = bench.bench_text(model, full, repeats=1)
    _sane([row])
    assert row["measure"] == "text_context" and row["max_feature_diff"] < 1e-6
    assert "(77 tokens)" in row["a"] and f"({model.prompt_tokens.shape[1]} tokens)" in row["b"]


def test_bench_train_and_eval(bench, setup):
    model, data, full = setup
    before = model.prompt_state_dict()
    rows = bench.bench_train(model, data, batch=4, n_batches=2, repeats=1, attack_steps=1, full=full)
    rows += bench.bench_eval(model, data, steps=1, batch=4, repeats=1)
    _sane(rows)
    after = model.prompt_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the benchmark leaves the prompts as it found them
    assert all(torch.equal(before[k], v) for k, v in full.prompt_state_dict().items())
    md = bench.to_markdown(rows, "tiny", bench.machine_info(1))
    assert "train_step" in md and "eval_throughput" in md and "train_text_context" in md
    assert "in float32" in md  # CPU runs are labelled with their precision


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no CUDA device exists")
def test_bench_cuda_without_gpu_names_the_fix(bench):
    with pytest.raises(SystemExit, match="use --device cpu"):
        bench.main(["--device", "cuda", "--no-train", "--no-eval"])


def test_autocast_policy_is_float32_on_cpu():
    from capt.train import autocast_for

    with autocast_for(torch.device("cpu"), amp=True):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
