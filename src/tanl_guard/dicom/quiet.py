# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""pydicom kept quiet while it reads untrusted files: its warnings and log records quote header values and paths.

pydicom logs, for instance, ``Invalid value for VR UI: '<the value>'`` and ``... in file <the path>`` at WARNING;
behind a CLI that logs WARNING to stderr these would carry patient data and hostile values to the console and to
whatever collects it. Outcomes say what went wrong, in the closed vocabulary of
:mod:`tanl_guard.dicom.vocabulary`.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_pydicom"]

_lock = threading.Lock()
_depth = 0
_saved_level = logging.NOTSET


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's log records (every ``pydicom.*`` logger) and Python warnings for the duration.

    Nested and concurrent uses are counted: the ``pydicom`` logger's level is restored when the last one exits.
    """
    global _depth, _saved_level
    logger = logging.getLogger("pydicom")
    with _lock:
        if _depth == 0:
            _saved_level = logger.level
            logger.setLevel(logging.CRITICAL + 1)  # children inherit it: their records are dropped at the source
        _depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                logger.setLevel(_saved_level)
