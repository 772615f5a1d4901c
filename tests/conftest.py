"""Shared fixtures: the tiny random-init open_clip CLIP (tools/tiny_clip.py) and small image batches."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# tools/ sits beside tests/ in the checkout; the tests' child processes import this file from elsewhere too.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from tools.tiny_clip import make_tiny_clip  # noqa: E402,F401 (the fixture below; child scripts import it from here)

# One intra-op thread per pytest-xdist worker (the root conftest.py sets OMP_NUM_THREADS), two otherwise.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


# A run on the mini CLIP (a RunSpec names its model and prompt shape: they have no library default).
MINI_RUN = dict(model="mini", pretrained=None, n_ctx=2, depth=3, ctx_init="a photo of a")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on two busy cores, two threads per process slow small models
    down many times (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_clip():
    return make_tiny_clip()


@pytest.fixture(scope="session")
def classnames():
    return ["cat", "dog", "car", "tree", "boat"]


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=g)
    labels = torch.randint(0, 5, (8,), generator=g)
    return images, labels
