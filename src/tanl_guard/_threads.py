# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""How many intra-op threads a piece of engine work gets, and whether the machine is too busy for more than one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["intra_op_threads", "one_thread", "machine_is_busy"]


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the enclosed torch operations on ``count`` intra-op threads, then restore the previous setting.

    Args:
        count: threads for the enclosed operations.

    The setting is torch's per calling thread (OpenMP's), so other threads of the process keep theirs.
    """
    previous = torch.get_num_threads()
    if count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def one_thread() -> contextlib.AbstractContextManager[None]:
    """Run the enclosed torch operations on the calling thread alone (see :func:`intra_op_threads`)."""
    return intra_op_threads(1)


def machine_is_busy() -> bool:
    """More runnable threads than cores over the last minute (the load average), where that is known.

    There every parallel region of a small operation waits for a descheduled thread: a parallel ``index_select`` of
    176 rows took 375-1,000 ms at a load of 15 on 2 cores, and 46 ms on one thread.
    """
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1) + 0.5
    except (AttributeError, OSError):
        return False
