"""Session-wide test settings: nothing is written to the user's home, nothing reaches for a model hub."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_user_dirs():
    """Corpus caches and the per-installation salt go to a throwaway folder, not ~/.cache and ~/.config."""
    keys = ("TANL_GUARD_CACHE", "XDG_CONFIG_HOME")
    saved = {key: os.environ.get(key) for key in keys}
    with tempfile.TemporaryDirectory(prefix="tanl_guard_tests_") as tmp:
        os.environ["TANL_GUARD_CACHE"] = os.path.join(tmp, "cache")
        os.environ["XDG_CONFIG_HOME"] = os.path.join(tmp, "config")
        yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
