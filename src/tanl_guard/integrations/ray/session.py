# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Connecting to Ray for one run: usage statistics off, logs quiet, ordered outputs, a stall timeout."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..._optional import optional_import

__all__ = ["import_ray", "ray_session"]


def _keep_stdout_clean() -> None:
    """Send what Ray prints for the driver (worker logs, and errors such as "(raylet) A worker died") to stderr.

    Ray prints those errors on stdout, which carries the ``--json`` lines. Its printer is looked up by name at
    each call, so replacing it in its module routes every message through stderr.
    """
    import sys

    module = sys.modules.get("ray._private.worker")
    original = getattr(module, "print_to_stdstream", None)
    if original is None or getattr(original, "_to_stderr", False):
        return

    def to_stderr(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return original({**data, "is_err": True}, *args, **kwargs)

    to_stderr._to_stderr = True  # type: ignore[attr-defined]
    module.print_to_stdstream = to_stderr  # type: ignore[union-attr]


def import_ray() -> Any:
    """``import ray`` (with Ray Data) or a clear error naming the extra that installs it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to anyone, whatever happens next
    ray = optional_import("ray", "ray", "--engine ray")
    optional_import("ray.data", "ray", "--engine ray")
    _keep_stdout_clean()
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, stall_timeout_s: float = 600.0
                ) -> Iterator[Any]:
    """Connect to (or start) Ray for the enclosed block, and yield the ``ray`` module.

    A Ray that this process already initialised is reused and left running; a connection or a local instance
    opened here is closed on exit.

    Args:
        address: a running cluster; None starts a local instance (no dashboard, this machine only).
        num_cpus: CPUs of a local instance (None: all of them).
        stall_timeout_s: Ray Data fails a dataset whose stages make no progress for this long.

    Raises:
        ImportError: Ray is not installed (``pip install 'tanl-guard[ray]'``).
        RuntimeError: the cluster cannot be reached.
    """
    ray = import_ray()
    verbose = logging.getLogger("tanl_guard").isEnabledFor(logging.DEBUG)
    level = logging.INFO if verbose else logging.ERROR
    opened = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": level, "log_to_driver": verbose, "configure_logging": True}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                # "local": a new instance, never a cluster that another user started on this machine
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
        except ConnectionError as exc:  # the address is reported without anything else of the environment
            raise RuntimeError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
        opened = True
    # Ray Data logs every execution and warns that progress bars are off: the CLI's own bar is enough.
    logging.getLogger("ray.data").setLevel(level)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # embeddings come back in the manifest's batch order
    context.enable_progress_bars = False
    context.print_on_execution_start = verbose
    context.execution_no_progress_timeout_s = float(stall_timeout_s)
    try:
        yield ray
    finally:
        if opened:
            ray.shutdown()
