"""The guard owns the online state: calls from several threads are serialised, none is lost."""

from __future__ import annotations

import threading

import torch


def test_concurrent_calls_are_serialised(make_guard, references):
    guard = make_guard()
    images = references["brain MRI"]
    features = guard.encoder.encode_images(images)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        try:
            for _ in range(3):
                rows = torch.randint(0, len(features), (5,), generator=generator)
                result = guard.score_features(features[rows])
                assert result.scores.shape == (5,)
        except BaseException as exc:  # surfaced below: a thread's assertion would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert guard.n_images == 4 * 3 * 5
    assert guard.detector.n_steps == 12 and guard.detector.n_seen == 60
    assert len(guard._history) == 60


def test_guard_warns_when_nothing_is_admitted_as_in_distribution(make_guard, caplog):
    """A stream the ID anchors do not match: TANL never admits a confident ID image, and the guard says so."""
    from skimage import data as skdata

    from tanl_guard.guard import Guard

    reference = make_guard()  # text anchors only: the surrogate cannot read "brain MRI", so nothing matches them
    guard = Guard.build(encoder=reference.encoder, labels=["brain MRI"], corpus=reference.corpus)
    photos = [skdata.astronaut() / 255.0, skdata.coffee() / 255.0, skdata.chelsea() / 255.0] * 2
    features = guard.encoder.encode_images(photos)
    assert guard.health()["ok"]
    with caplog.at_level("WARNING", logger="tanl_guard.guard.guard"):
        for _ in range(5):
            result = guard.score_features(features)
            assert not bool(result.step.confident_id.any())
    health = guard.snapshot()["health"]
    assert not health["ok"] and health["recent_confident_id"] == [0] * 5
    assert "no confident in-distribution image" in caplog.text
