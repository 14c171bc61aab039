# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The command line's log: one line per message on stderr, above the progress bar, libraries kept quiet.

Libraries log through the same handler, filtered by ``-v``: without it only their errors appear, as one line
and without a traceback, and pydicom's decoder messages not at all (a file it cannot decode becomes an
``unreadable`` verdict whose reason says why); ``-v`` adds their warnings; ``-vv`` shows everything, tracebacks
included.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_logging"]

_OWN = "tanl_guard"
# Loggers whose messages the verdicts already carry: shown from -v on.
_QUIET = ("pydicom", "PIL", "pylibjpeg", "openjpeg", "libjpeg")


class _LibraryFilter(logging.Filter):
    def __init__(self, verbose: int) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == _OWN or record.name.startswith(_OWN + "."):
            return True
        if self.verbose >= 2:
            return True
        quiet = record.name.split(".", 1)[0] in _QUIET
        floor = (logging.CRITICAL + 1 if quiet else logging.ERROR) if self.verbose == 0 else logging.WARNING
        if record.levelno < floor:
            return False
        record.exc_info = record.exc_text = record.stack_info = None  # one line, no traceback
        return True


class _BarSafeHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr``, through ``tqdm.write`` when tqdm is loaded, so a message never
    breaks a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the stream of now (a test runner swaps it per invocation)
        tqdm = sys.modules.get("tqdm")
        if tqdm is None:
            super().emit(record)
            return
        try:
            tqdm.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def configure_logging(verbose: int) -> None:
    """Route every logger (ours and the libraries') to stderr at the level ``-v`` asks for.

    Args:
        verbose: the count of ``-v`` flags (0, 1, 2+).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tanl_guard", False):
            root.removeHandler(handler)
    handler = _BarSafeHandler(sys.stderr)
    handler._tanl_guard = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_LibraryFilter(verbose))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)
    # MLflow logs through a handler of its own ("Creating initial MLflow database tables..."), at the level this
    # variable names when it is first imported.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if verbose >= 2 else "INFO" if verbose else "WARNING")
    logging.getLogger(_OWN).setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
