"""How the test command spreads the suite over pytest-xdist workers (``scripts/test.sh`` runs two).

Here at the root, so it holds for ``pytest tests``, ``pytest --nbval notebooks`` and both at once.
"""

from __future__ import annotations

import os

import pytest

# Each worker, and every process it starts (notebook kernels, CLI runs), gets its share of the cores:
# two threads per process on two busy cores slow small models down many times.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))  # torch reads it at import

# The longest groups first, so that the workers finish together rather than one waiting on another.
_FIRST = ("notebooks", "tests/test_rehearsal.py", "tests/test_sweep.py")


def _group(nodeid: str) -> str:
    """The unit one worker runs in order: a test file, or all the notebooks together (they share the store
    in outputs/ci, and nbval runs each notebook's cells in order in one kernel)."""
    path = nodeid.split("::", 1)[0]
    return "notebooks" if path.startswith("notebooks/") else path


@pytest.hookimpl(optionalhook=True)  # called by pytest-xdist only
def pytest_xdist_make_scheduler(config, log):
    # xdist's own --dist loadgroup marks cannot do this under pytest 9 (its node ids are read-only there)
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the order of _FIRST, not the most tests first

    class ByFileAndNotebooks(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ByFileAndNotebooks(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    rank = {g: i for i, g in enumerate(_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item.nodeid), len(_FIRST)))  # stable: a file's order is kept
