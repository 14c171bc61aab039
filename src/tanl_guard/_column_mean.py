# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Column means of a row buffer that changes a few rows at a time, bit-identical to ``rows[:n].mean(dim=0)``.

A queue of L activation rows needs its column mean every batch, while a batch replaces only some of its rows.
torch's CPU sum over the rows of a contiguous (n, N) float32/float64 tensor is a cascade: each thread takes a
range of columns; within it, groups of four SIMD vectors of columns add the rows in blocks of 16 (a running sum
per block) and combine the block sums over four levels, while the few columns left over at the end of the range
go through an interleaved four-way sum. This module keeps the block sums of rows that did not change, recomputes
only the blocks that did, sums the left-over columns directly and combines everything in torch's order, so the
result has the same bits as ``rows[:n].mean(dim=0)`` at a fraction of the memory traffic.

The layout it mirrors is torch's (ATen ``SumKernel.cpp``, ``TensorIteratorReduce.cpp``), not a documented
contract: every new configuration is checked against ``rows[:n].mean(dim=0)`` on its first calls and every
``_VERIFY_EVERY`` calls after, and any mismatch switches the instance to plain ``mean`` for good. On CUDA and for
other dtypes it always uses plain ``mean``.
"""

from __future__ import annotations

import torch

from ._threads import one_thread

__all__ = ["IncrementalColumnMean"]

_GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: smaller reductions run on one thread
_LEVELS = 4  # cascade levels of ATen's multi_row_sum
_VERIFY_FIRST = 2  # calls checked against torch after a configuration change
_VERIFY_EVERY = 64  # and one call in this many after that


def _ceil_log2(x: int) -> int:
    return 1 if x <= 2 else (x - 1).bit_length()


def _vector_width(itemsize: int) -> int:
    """Elements per SIMD vector of the CPU kernels torch dispatches to (32 bytes unless AVX-512)."""
    return (64 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 32) // itemsize


def _column_ranges(n_rows: int, n_cols: int, itemsize: int, threads: int) -> list[tuple[int, int, int]]:
    """(start, cascade end, stop) of each thread's column range in torch's sum over the rows of (n_rows, n_cols).

    Columns [start, cascade end) are summed in blocks of rows; [cascade end, stop) by the interleaved sum.
    """
    if n_rows * n_cols < _GRAIN_SIZE or threads <= 1 or n_cols <= 1:
        bounds = [(0, n_cols)]
    else:  # at::parallel_for(0, cols, 1): ceil(cols / threads) each, then rounded down to 128-byte columns
        per_thread = -(-n_cols // threads)
        per_line = max(128 // itemsize, 1)
        bounds = []
        for t in range(min(threads, n_cols)):
            begin, end = t * per_thread, min(n_cols, (t + 1) * per_thread)
            if begin >= n_cols:
                break
            begin -= begin % per_line
            if end != n_cols:
                end -= end % per_line
            if begin < end:
                bounds.append((begin, end))
    group = 4 * _vector_width(itemsize)
    return [(begin, begin + (end - begin) // group * group, end) for begin, end in bounds]


class IncrementalColumnMean:
    """``rows[:n].mean(dim=0)`` of a CPU buffer, recomputing only the blocks of rows marked as changed.

    Args:
        rows: the (capacity, N) buffer; its rows change in place and the owner reports which with
            :meth:`changed`.
    """

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows
        self.enabled = rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.float64) and rows.ndim == 2
        self._layout: tuple | None = None  # (threads, capability, step, column ranges) the cache was built for
        self._step = 16
        self._block_sums: torch.Tensor | None = None
        self._lengths: list[int] = []  # rows each cached block sum covers (0 = to be computed)
        self._calls = 0
        self._verified = 0

    def changed(self, start: int, stop: int) -> None:
        """Rows [start, stop) were overwritten."""
        for block in range(start // self._step, min(-(-stop // self._step), len(self._lengths))):
            self._lengths[block] = 0

    def changed_all(self) -> None:
        """Every row may have changed."""
        self._lengths = [0] * len(self._lengths)

    def mean(self, n: int) -> torch.Tensor:
        """The column mean of the first ``n >= 1`` rows, with the bits of ``rows[:n].mean(dim=0)``."""
        if not self.enabled:
            return self.rows[:n].mean(dim=0)
        threads = torch.get_num_threads()
        step = 1 << max(4, _ceil_log2(n) // _LEVELS)
        ranges = _column_ranges(n, self.rows.shape[1], self.rows.element_size(), threads)
        layout = (threads, torch.backends.cpu.get_cpu_capability(), step, tuple(ranges))
        if layout != self._layout:
            self._reset_cache(layout)
        with one_thread():
            result = self._cascade_mean(n, ranges)
        self._calls += 1
        if self._verified < _VERIFY_FIRST or self._calls % _VERIFY_EVERY == 0:
            self._verified += 1
            expected = self.rows[:n].mean(dim=0)
            if not torch.equal(result, expected):
                self.enabled = False  # torch sums in another order here: use its mean from now on
                return expected
        return result

    # ------------------------------------------------------------------ internals
    def _reset_cache(self, layout: tuple) -> None:
        self._layout, self._step = layout, layout[2]
        n_blocks = -(-self.rows.shape[0] // self._step)
        if self._block_sums is None or self._block_sums.shape[0] < n_blocks:
            self._block_sums = self.rows.new_empty(n_blocks, self.rows.shape[1])
        self._lengths = [0] * n_blocks
        self._verified = 0

    def _cascade_mean(self, n: int, ranges: list[tuple[int, int, int]]) -> torch.Tensor:
        rows, sums, step = self.rows, self._block_sums, self._step
        assert sums is not None
        for block in range(-(-n // step)):
            lo, hi = block * step, min((block + 1) * step, n)
            if self._lengths[block] != hi - lo:
                for begin, cascade_end, _ in ranges:
                    if begin < cascade_end:  # under one thread, whole vector groups are summed as a block
                        torch.sum(rows[lo:hi, begin:cascade_end], dim=0, out=sums[block, begin:cascade_end])
                self._lengths[block] = hi - lo

        # ATen's multi_row_sum: acc[0] collects a block, acc[j] the completed groups of level j (step**j rows).
        full_blocks, level_power = n // step, step.bit_length() - 1
        level_mask = step - 1
        acc = [rows.new_zeros(rows.shape[1]) for _ in range(_LEVELS)]
        for block in range(full_blocks):
            end = (block + 1) * step
            acc[1] = acc[1] + sums[block]
            for level in range(2, _LEVELS):
                if end & (level_mask << ((level - 1) * level_power)):
                    break
                acc[level] = acc[level] + acc[level - 1]
                acc[level - 1] = torch.zeros_like(acc[level - 1])
        total = sums[full_blocks] if full_blocks * step < n else acc[0]  # the partial block, summed row by row
        for level in range(1, _LEVELS):
            total = total + acc[level]
        # The left-over columns, summed directly by the same interleaved sum: a call at least one vector wide takes
        # that path for every column (narrower ones would be summed block-wise instead).
        vector = _vector_width(rows.element_size())
        for _, cascade_end, end in ranges:
            if cascade_end < end:
                lo = max(min(cascade_end, end - vector), 0)
                total[cascade_end:end] = rows[:n, lo:end].sum(dim=0)[cascade_end - lo :]
        return total.div_(n)
