"""Tables the tests measure and the book shows: the region between two markers of a page must be what
the test rendered, or the test fails; with ``CAPT_WRITE_TABLE=1`` it rewrites the region instead."""

from __future__ import annotations

import os
from pathlib import Path


def check_generated_region(page: Path, begin: str, end: str, table: str, what: str, regenerate: str) -> None:
    text = page.read_text(encoding="utf-8")
    assert begin in text and end in text, f"{page} lost the markers of its {what} ({begin} ... {end})"
    head, rest = text.split(begin, 1)
    current, tail = rest.split(end, 1)
    if os.environ.get("CAPT_WRITE_TABLE"):
        page.write_text(f"{head}{begin}\n{table}\n{end}{tail}", encoding="utf-8")
        return
    assert current.strip() == table.strip(), f"{page.name}'s {what} is out of date; regenerate it with {regenerate}"
