# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A FIFO of confident samples: their embeddings (the state) and their activation rows (a rebuildable cache)."""

from __future__ import annotations

import torch

from ._column_mean import IncrementalColumnMean

__all__ = ["ActivationQueue"]


class ActivationQueue:
    """Fixed-capacity FIFO over a ring buffer.

    Each entry is an image embedding (D floats, what is saved) and its N-dimensional activation row (what the
    queue mean needs; rebuilt from the embeddings after loading). The mean is the exact column mean of the rows
    held (bit for bit ``rows.mean(dim=0)`` over the ring, see :mod:`tanl_guard._column_mean`), recomputed only for
    the rows that changed, so it never drifts. The ring's start offset is part of the state because the
    summation order of the mean depends on where rows sit.

    Args:
        capacity: L, the number of entries kept; pushing more evicts the oldest.
        n_columns: N, the length of an activation row.
        dim: D, the embedding dimension.
        dtype: dtype of embeddings and rows.
        device: where the buffers live.
    """

    def __init__(self, capacity: int, n_columns: int, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.capacity = int(capacity)
        self.features = torch.zeros(self.capacity, dim, dtype=dtype, device=device)
        self.rows = torch.zeros(self.capacity, n_columns, dtype=dtype, device=device)
        self.start = 0
        self.size = 0
        self._mean: torch.Tensor | None = None  # column mean of the rows held; None = to be recomputed
        self._column_mean = IncrementalColumnMean(self.rows)

    def __len__(self) -> int:
        return self.size

    def push(self, features: torch.Tensor, rows: torch.Tensor) -> None:
        """Append entries in order; if more than the capacity arrive at once, only the last ``capacity`` stay.

        The new entries occupy consecutive slots modulo the capacity, so they are written as at most two slice
        copies.
        """
        count = int(features.shape[0])
        if count == 0:
            return
        self._mean = None
        if count >= self.capacity:
            self.features.copy_(features[-self.capacity :])
            self.rows.copy_(rows[-self.capacity :])
            self._column_mean.changed_all()
            self.start, self.size = 0, self.capacity
            return
        # A queue that is not full starts at slot 0, so the first free slot is start + size in both cases.
        write = (self.start + self.size) % self.capacity
        first = min(count, self.capacity - write)
        self.features[write : write + first] = features[:first]
        self.rows[write : write + first] = rows[:first]
        self._column_mean.changed(write, write + first)
        if first < count:
            self.features[: count - first] = features[first:]
            self.rows[: count - first] = rows[first:]
            self._column_mean.changed(0, count - first)
        overflow = self.size + count - self.capacity
        if overflow > 0:  # the oldest `overflow` entries were overwritten
            self.start, self.size = (self.start + overflow) % self.capacity, self.capacity
        else:
            self.size += count

    def mean(self) -> torch.Tensor:
        """Column mean of the activation rows held (zeros for an empty queue). Do not modify the result in place."""
        if self._mean is None:
            if self.size == 0:
                self._mean = torch.zeros_like(self.rows[0])
            else:  # not yet wrapped: start == 0 and the rows are the first `size` slots; full: all of them
                self._mean = self._column_mean.mean(self.size)
        return self._mean

    def ordered_slots(self) -> torch.Tensor:
        """Physical slots from the oldest entry to the newest."""
        return (self.start + torch.arange(self.size, device=self.features.device)) % self.capacity

    def ordered_features(self) -> torch.Tensor:
        """The embeddings held, oldest first."""
        return self.features[self.ordered_slots()].clone()

    def restore(self, features: torch.Tensor, rows: torch.Tensor, start: int) -> None:
        """Put saved entries (oldest first) back at the physical slots they had."""
        count = int(features.shape[0])
        if count > self.capacity or not 0 <= start < max(self.capacity, 1):
            raise ValueError(f"cannot restore {count} entries with start {start} into a queue of {self.capacity}")
        if count < self.capacity and start != 0:
            raise ValueError("a queue that is not full always starts at slot 0")
        self.features.zero_()
        self.rows.zero_()
        self._column_mean.changed_all()
        self._mean = None
        self.start, self.size = start, count
        slots = self.ordered_slots()
        self.features[slots] = features
        self.rows[slots] = rows
