# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A FIFO of confident samples: their embeddings (the state) and their activation rows (a rebuildable cache)."""

from __future__ import annotations

import torch

__all__ = ["ActivationQueue"]


class ActivationQueue:
    """Fixed-capacity FIFO over a ring buffer.

    Each entry is an image embedding (D floats, what is saved) and its N-dimensional activation row (what the
    queue mean needs; rebuilt from the embeddings after loading). The mean is the exact column mean of the rows
    held, recomputed on demand, so it never drifts. The ring's start offset is part of the state because the
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

    def __len__(self) -> int:
        return self.size

    def _slots_for(self, count: int) -> torch.Tensor:
        """Physical slots for ``count <= capacity`` new entries, advancing start/size as the pushes would."""
        slots = []
        for _ in range(count):
            if self.size < self.capacity:
                slots.append((self.start + self.size) % self.capacity)
                self.size += 1
            else:
                slots.append(self.start)
                self.start = (self.start + 1) % self.capacity
        return torch.tensor(slots, dtype=torch.long, device=self.features.device)

    def push(self, features: torch.Tensor, rows: torch.Tensor) -> None:
        """Append entries in order; if more than the capacity arrive at once, only the last ``capacity`` stay."""
        count = int(features.shape[0])
        if count == 0:
            return
        if count >= self.capacity:
            self.features.copy_(features[-self.capacity :])
            self.rows.copy_(rows[-self.capacity :])
            self.start, self.size = 0, self.capacity
            return
        slots = self._slots_for(count)
        self.features[slots] = features
        self.rows[slots] = rows

    def mean(self) -> torch.Tensor:
        """Column mean of the activation rows held (zeros for an empty queue)."""
        if self.size == 0:
            return torch.zeros_like(self.rows[0])
        if self.size < self.capacity:  # not yet wrapped: start == 0 and the rows are the first `size` slots
            return self.rows[: self.size].mean(dim=0)
        return self.rows.mean(dim=0)

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
        self.start, self.size = start, count
        slots = self.ordered_slots()
        self.features[slots] = features
        self.rows[slots] = rows
