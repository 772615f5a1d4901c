"""capt's papermill plugin: papermill is quiet about the settings a chapter accepts.

papermill knows a notebook's parameters only from the assignments in its ``parameters`` cell, and the
chapters keep that cell short (``profile`` and the chapter's own knobs): every other setting
(``shifts``, ``methods``, ``out_dir``, ...) reaches :meth:`capt.notebook.Settings.for_chapter` through the
cell papermill injects, where it is read and checked. Its "Passed unknown parameter: shifts" would tell a
reader that a value they set was ignored when it was used.

papermill imports the plugins its packages declare when it starts (the ``papermill.engine`` entry point in
pyproject.toml), so importing this module installs a filter on papermill's logger in every papermill
process, ``papermill`` on the command line included. The filter drops the warning only for a name a
setting takes: any other name still warns, and fails the chapter's checks. The engine registered under the
name ``capt`` is papermill's default engine, unchanged (``--engine capt`` runs exactly as the default).
"""

from __future__ import annotations

import logging

PREFIX = "Passed unknown parameter: "


def __getattr__(name: str):
    # ``Engine``, the entry point's object, is papermill's default engine itself, looked up only when papermill
    # asks: papermill loads its plugins while its own engines module is still being imported, so importing
    # papermill here (from the runner, say, before papermill) would go round in a circle.
    if name == "Engine":
        from papermill.engines import NBClientEngine

        return NBClientEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class AcceptedSettings(logging.Filter):
    """Drops "Passed unknown parameter: NAME" for a NAME that :class:`capt.notebook.Settings` takes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(PREFIX):
            return True
        from .notebook import Settings  # only when papermill has a name to ask about (it imports torch)

        return message[len(PREFIX):].strip() not in Settings.names()


def install() -> None:
    """Put the filter on papermill's logger once (papermill's plugin import, ``capt run``)."""
    log = logging.getLogger("papermill")
    if not any(isinstance(f, AcceptedSettings) for f in log.filters):
        log.addFilter(AcceptedSettings())


install()
