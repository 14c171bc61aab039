# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Package names imported on first use: a package's ``__getattr__`` and ``__dir__`` from a name -> module map."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any],
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package whose names load their module when first used.

    Args:
        package: the package's ``__name__``.
        exports: public name -> submodule (relative to the package) that defines it.
        namespace: the package's ``globals()``; a name, once loaded, is cached there.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
