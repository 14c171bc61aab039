# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard``: screen DICOM studies, build corpora, inspect state and audit runs, open the MLflow UI.

Exit codes: 0 done; 1 runtime error; 2 usage error; 3 with ``--fail-on-reject`` when a study was rejected;
4 with ``--strict`` when inputs were unreadable or conflicting (an SOP Instance UID with two contents).
"""

from __future__ import annotations

import logging
import os

import click

from .. import __version__
from .audit import audit
from .corpus import corpus
from .screen import screen
from .state import state
from .ui import ui

__all__ = ["cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="tanl-guard")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """tanl-guard: an out-of-distribution guardrail for medical-imaging classifiers (TANL)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the user; never reach for a hub silently
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


cli.add_command(screen)
cli.add_command(corpus)
cli.add_command(state)
cli.add_command(audit)
cli.add_command(ui)

if __name__ == "__main__":
    cli()
