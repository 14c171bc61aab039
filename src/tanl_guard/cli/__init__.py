# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The ``tanl-guard`` command line (click)."""

from __future__ import annotations

__all__ = ["cli"]


def __getattr__(name: str):  # lazy: importing tanl_guard.cli must not import click and the stack
    if name == "cli":
        from .main import cli

        return cli
    raise AttributeError(name)
