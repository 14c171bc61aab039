"""The FIFO of confident samples: ring order, and a column mean with the bits of a fresh ``rows.mean(dim=0)``."""

from __future__ import annotations

import pytest
import torch

from tanl_guard._column_mean import IncrementalColumnMean
from tanl_guard._threads import one_thread
from tanl_guard.queue import ActivationQueue


def _fresh_mean(queue: ActivationQueue) -> torch.Tensor:
    """What the queue mean was before it was made incremental: a plain mean over the ring's physical rows."""
    return queue.rows[: queue.size].mean(dim=0) if queue.size < queue.capacity else queue.rows.mean(dim=0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "capacity, n_columns",
    [(300, 5000), (30, 1500), (257, 333), (17, 37), (33, 3), (4, 4097), (1, 100)],
)
def test_incremental_mean_has_the_bits_of_a_fresh_mean(threads, dtype, capacity, n_columns):
    g = torch.Generator().manual_seed(capacity + n_columns)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        queue = ActivationQueue(capacity, n_columns, 3, dtype, torch.device("cpu"))
        for i in range(25):
            count = capacity + 2 if i % 9 == 8 else int(torch.randint(1, capacity // 2 + 2, (1,), generator=g))
            rows = torch.rand(count, n_columns, generator=g, dtype=dtype) ** 4  # activations span magnitudes
            queue.push(torch.zeros(count, 3, dtype=dtype), rows)
            assert torch.equal(queue.mean(), _fresh_mean(queue)), i
            assert torch.equal(queue.mean(), _fresh_mean(queue)), i  # the cached value too
        # the incremental path itself matched torch every time (it falls back to a plain mean on a mismatch)
        assert queue._column_mean.enabled
    finally:
        torch.set_num_threads(previous)


def test_incremental_mean_falls_back_when_it_cannot_match():
    g = torch.Generator().manual_seed(0)
    rows = torch.rand(40, 1000, generator=g)
    mean = IncrementalColumnMean(rows)
    assert torch.equal(mean.mean(40), rows.mean(dim=0))
    rows[3] += 1.0  # changed without telling it: the next verified call notices and switches to a plain mean
    assert torch.equal(mean.mean(40), rows.mean(dim=0))
    assert not mean.enabled
    rows[5] += 1.0
    assert torch.equal(mean.mean(40), rows.mean(dim=0))
    assert not IncrementalColumnMean(rows.half()).enabled  # other dtypes always take torch's mean


def test_one_thread_restores_the_thread_count_even_on_error():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError):
            with one_thread():
                assert torch.get_num_threads() == 1
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_push_keeps_the_last_entries_in_order_and_restores_slots():
    g = torch.Generator().manual_seed(1)
    queue = ActivationQueue(7, 11, 2, torch.float64, torch.device("cpu"))
    pushed = []
    for count in (3, 2, 4, 1, 7, 9, 5, 6, 1):
        features = torch.randn(count, 2, generator=g, dtype=torch.float64)
        queue.push(features, features.sum(1, keepdim=True).expand(count, 11))
        pushed.extend(features)
        expected = torch.stack(pushed[-7:])
        assert len(queue) == len(expected)
        assert torch.equal(queue.ordered_features(), expected)
        assert torch.equal(queue.rows[queue.ordered_slots()][:, 0], expected.sum(1))
    copy = ActivationQueue(7, 11, 2, torch.float64, torch.device("cpu"))
    copy.restore(queue.ordered_features(), queue.rows[queue.ordered_slots()], queue.start)
    assert torch.equal(copy.features, queue.features) and torch.equal(copy.rows, queue.rows)
    assert torch.equal(copy.mean(), queue.mean())
