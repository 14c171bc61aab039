# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Lazy optional imports: a missing extra fails where it is used, naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["optional_import"]


def optional_import(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an ImportError that says which ``tanl-guard[extra]`` provides it.

    Args:
        module: dotted module name, e.g. ``"open_clip"``.
        extra: the package extra that installs it, e.g. ``"clip"``.
        purpose: what it is needed for, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        need = f" for {purpose}" if purpose else ""
        raise ImportError(
            f"{module!r} is needed{need} but is not installed: pip install 'tanl-guard[{extra}]'"
        ) from exc
