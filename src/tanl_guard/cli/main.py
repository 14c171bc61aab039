# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard``: screen DICOM studies, build corpora, inspect state and audit runs, open the MLflow UI.

Exit codes: 0 done; 1 runtime error; 2 usage error; 3 with ``--fail-on-reject`` when a study was rejected;
4 with ``--strict`` when inputs were unreadable or conflicting; 5 with ``--strict`` when nothing was screened;
143 (SIGTERM) and 130 (Ctrl-C) when ``screen`` was stopped after checkpointing the batch in hand.

Only click is imported before the command line is parsed: ``--version`` and ``--help`` answer at once, and each
command imports what it needs when it runs.
"""

from __future__ import annotations

import os

import click

from .. import __version__
from .._offline import disable_telemetry
from ._logging import configure_logging
from .audit import audit
from .corpus import corpus
from .lookup import lookup
from .screen import screen
from .state import state
from .ui import ui

__all__ = ["cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="tanl-guard")
@click.option("-v", "--verbose", count=True,
              help="More log output on stderr: -v adds the libraries' warnings, -vv everything with tracebacks.")
def cli(verbose: int) -> None:
    """tanl-guard: an out-of-distribution guardrail for medical-imaging classifiers (TANL)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the user; never reach for a hub silently
    disable_telemetry()  # no connections but to the tracking URI given
    configure_logging(verbose)


cli.add_command(screen)
cli.add_command(corpus)
cli.add_command(state)
cli.add_command(audit)
cli.add_command(lookup)
cli.add_command(ui)

if __name__ == "__main__":
    cli()
