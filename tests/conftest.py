"""Session-wide test settings (nothing is written to the user's home, nothing reaches for a model hub) and the
fixtures the guard and pipeline tests share: a real demo folder (packaged DICOM + brain MR written from packaged
volumes), a small corpus file and the real surrogate encoder."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _stop_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    """A SIGTERM (a CI timeout, ``timeout``) stops the run as Ctrl-C does: pytest then tears the fixtures down, so
    no server or cluster a fixture started (``mlflow server``, the Ray head, Orthanc) outlives the run."""
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)


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


# A small corpus keeps the tests fast; the labels are ordinary WordNet-style nouns plus a few radiology words.
SMALL_CORPUS = """
# everyday objects, scenes and animals
teapot
espresso
coffee mug
astronaut
space suit
cat
dog
bicycle
car
building
mountain
beach
forest
flower
document
page of text
keyboard
television
clock
chair
table
guitar
book
bottle
bridge
boat
airplane
street
kitchen
bird
# radiology words (the ID labels themselves are removed from the corpus automatically)
chest radiograph
x-ray of the knee
ultrasound scan
computed tomography
bone scan
fetus
lung
rib cage
hand
spine
"""


@pytest.fixture(scope="session")
def salt_env():
    old = os.environ.get("TANL_GUARD_SALT")
    os.environ["TANL_GUARD_SALT"] = "pipeline-tests"
    yield "pipeline-tests"
    if old is None:
        os.environ.pop("TANL_GUARD_SALT", None)
    else:
        os.environ["TANL_GUARD_SALT"] = old


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory, salt_env):
    from tanl_guard.demo import build_demo_folder

    return build_demo_folder(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "negatives.txt"
    path.write_text(SMALL_CORPUS)
    return path


@pytest.fixture(scope="session")
def surrogate():
    from tanl_guard.encoders import resolve

    return resolve("surrogate")


@pytest.fixture(scope="session")
def references(demo_folder):
    from tanl_guard.pipeline.references import load_reference_images

    return load_reference_images(demo_folder.references, ["brain MRI"])


@pytest.fixture
def make_guard(surrogate, references, corpus_file, tmp_path_factory):
    from tanl_guard.guard import Guard, GuardPolicy, ThresholdPolicy

    cache = tmp_path_factory.mktemp("cache")

    def make(threshold: str = "adaptive", detector: str = "tanl", seed: int = 0, **kwargs):
        return Guard.build(encoder=surrogate, labels=["brain MRI"], reference_images=references,
                           corpus=str(corpus_file), detector=detector,
                           policy=GuardPolicy(threshold=ThresholdPolicy.parse(threshold)), cache_dir=str(cache),
                           seed=seed, **kwargs)

    return make
