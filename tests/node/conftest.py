"""Fixtures of the node tests: the demo studies, guards with the real surrogate encoder (on the root conftest's small
corpus)."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # dicom_peers, listener_process


@pytest.fixture(scope="session")
def node_salt(salt_env):
    """The salt of every key in these tests (the session's, set by the root conftest)."""
    return salt_env


@pytest.fixture(scope="session")
def demo(demo_folder):
    """The demo's studies and references (built once per session by the root conftest)."""
    return demo_folder


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("node_cache")


@pytest.fixture(scope="session")
def _guard(demo, corpus_file, corpus_cache):
    from tanl_guard.encoders import resolve
    from tanl_guard.guard import Guard
    from tanl_guard.pipeline.references import load_reference_images

    references = load_reference_images(demo.references, ["brain MRI"])
    guard = Guard.build(encoder=resolve("surrogate"), labels=["brain MRI"], reference_images=references,
                        corpus=str(corpus_file), cache_dir=str(corpus_cache), seed=0)
    return guard, copy.deepcopy(guard.state_dict())


@pytest.fixture
def make_guard(_guard):
    """A guard in its state as built (one build per session: building is the slow part on a busy machine)."""
    guard, initial = _guard

    def make():
        guard.load_state_dict(copy.deepcopy(initial))
        return guard

    return make


@pytest.fixture
def receiver():
    from dicom_peers import Receiver

    rx = Receiver()
    yield rx
    rx.stop()
