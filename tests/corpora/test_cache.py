# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest
import torch

from tanl_guard.corpora import CacheWarning, Corpus, cache_path, default_cache_dir, embed_corpus, load_corpus

from .conftest import CountingEncoder


@pytest.fixture(scope="module")
def small_corpus():
    return load_corpus("wordnet").subset(range(0, 60000, 2000)) + load_corpus("dicom:cid=29").subset(range(10))


def _parts(folder):
    return sorted(folder.glob("part-*.pt"))


def test_second_load_hits_cache(counting_encoder, small_corpus, tmp_path):
    first = embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False)
    assert counting_encoder.calls == 1
    assert first.shape[0] == len(small_corpus) and first.dtype == torch.float32
    assert torch.allclose(first.norm(dim=1), torch.ones(len(small_corpus)), atol=1e-5)
    second = embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False)
    assert counting_encoder.calls == 1
    assert torch.equal(first, second)
    folder = cache_path(counting_encoder, tmp_path)
    assert list(tmp_path.iterdir()) == [folder] and len(_parts(folder)) == 1
    assert not list(tmp_path.rglob("*.tmp"))  # no temp files left behind


def test_corrupt_part_detected_and_rebuilt(counting_encoder, small_corpus, tmp_path):
    reference = embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False)
    (path,) = _parts(cache_path(counting_encoder, tmp_path))
    blob = torch.load(path, weights_only=True)
    blob["embeddings"][0, 0] += 0.5  # silent bit rot in the data: only the checksum can tell
    torch.save(blob, path)
    with pytest.warns(CacheWarning, match="checksum"):
        rebuilt = embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False)
    assert counting_encoder.calls == 2 and torch.allclose(rebuilt, reference, atol=1e-6)
    path.write_bytes(path.read_bytes()[:200])  # truncated file
    with pytest.warns(CacheWarning):
        embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False)
    assert counting_encoder.calls == 3
    assert embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False).shape == reference.shape
    assert counting_encoder.calls == 3


def test_mismatched_header_is_rebuilt(counting_encoder, small_corpus, tmp_path):
    embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False)
    (path,) = _parts(cache_path(counting_encoder, tmp_path))
    blob = torch.load(path, weights_only=True)
    blob["header"]["encoder_id"] = "someone-else"
    torch.save(blob, path)
    with pytest.warns(CacheWarning, match="encoder_id"):
        embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False)
    assert counting_encoder.calls == 2


def test_key_changes_folder_and_corpora_share_labels(text_encoder, small_corpus, tmp_path):
    a, b = CountingEncoder(text_encoder), CountingEncoder(text_encoder, encoder_id="other-encoder")
    assert cache_path(a, tmp_path) != cache_path(b, tmp_path)
    assert cache_path(a, tmp_path) != cache_path(a, tmp_path, dtype="float16")
    embed_corpus(a, small_corpus, cache_dir=tmp_path, progress=False)
    embed_corpus(b, small_corpus, cache_dir=tmp_path, progress=False)
    assert a.calls == b.calls == 1 and len(list(tmp_path.iterdir())) == 2
    # a sub-corpus (as after removing ID labels) needs no encoder call; a super-corpus embeds only its new labels
    seen: list[str] = []
    original = text_encoder.encode_texts

    class Recording(CountingEncoder):
        def encode_texts(self, texts, batch_size=None, progress=False):
            self.calls += 1
            seen.extend(texts)
            return original(texts, batch_size=batch_size, progress=progress)

    rec = Recording(text_encoder)
    embed_corpus(rec, small_corpus.subset(range(0, len(small_corpus), 2)), cache_dir=tmp_path, progress=False)
    assert rec.calls == 0
    bigger = small_corpus + Corpus.from_labels(["teapot cosy", "lighthouse"], kind="noun")
    full = embed_corpus(rec, bigger, cache_dir=tmp_path, progress=False)
    assert rec.calls == 1 and len(seen) == 2 and full.shape[0] == len(bigger)
    direct = embed_corpus(rec, bigger, use_cache=False, progress=False)
    assert torch.allclose(full, direct, atol=1e-5)
    # another template set is another set of prompts: embedded, not confused with the cached ones
    other = embed_corpus(a, small_corpus, cache_dir=tmp_path, progress=False, templates={"noun": "a drawing of {}"})
    assert a.calls == 2 and not torch.allclose(other, full[: len(small_corpus)])


def test_interrupted_build_resumes_where_it_stopped(text_encoder, small_corpus, tmp_path):
    class Interrupted(CountingEncoder):
        def __init__(self, inner, fail_at):
            super().__init__(inner)
            self.fail_at, self.texts = fail_at, 0

        def encode_texts(self, texts, batch_size=None, progress=False):
            if self.calls == self.fail_at:
                raise KeyboardInterrupt  # the operator's Ctrl-C in the middle of a long build
            self.calls += 1
            self.texts += len(texts)
            return self.inner.encode_texts(texts, batch_size=batch_size, progress=progress)

    first = Interrupted(text_encoder, fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(first, small_corpus, cache_dir=tmp_path, progress=False, part_size=8)
    assert first.texts == 16 and len(_parts(cache_path(first, tmp_path))) == 2  # two finished parts kept
    second = Interrupted(text_encoder, fail_at=-1)
    resumed = embed_corpus(second, small_corpus, cache_dir=tmp_path, progress=False, part_size=8)
    assert second.texts == len(small_corpus) - 16  # only the rest was embedded
    reference = embed_corpus(second, small_corpus, use_cache=False, progress=False)
    assert torch.allclose(resumed, reference, atol=1e-5)


def test_progress_bar_by_default_only_on_a_terminal(counting_encoder, small_corpus, tmp_path, capsys, monkeypatch):
    embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path)  # stderr is captured: not a terminal
    assert "embedding corpus" not in capsys.readouterr().err
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path / "again")
    assert "embedding corpus" in capsys.readouterr().err


def test_float16_store(counting_encoder, small_corpus, tmp_path):
    full = embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False)
    half = embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False, dtype="float16")
    again = embed_corpus(counting_encoder, small_corpus, cache_dir=tmp_path, progress=False, dtype="float16")
    assert counting_encoder.calls == 2 and torch.equal(half, again)
    assert half.dtype == torch.float32 and (half - full).abs().max() < 2e-3


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TANL_GUARD_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "corpus_embeddings"
    monkeypatch.delenv("TANL_GUARD_CACHE")
    assert ".cache" in str(default_cache_dir())


def test_encoder_without_provenance_rejected(small_corpus, tmp_path):
    class Anonymous:
        def encode_texts(self, texts, batch_size=None, progress=False):
            return torch.zeros(len(texts), 4)

    with pytest.raises(TypeError, match="id"):
        embed_corpus(Anonymous(), small_corpus, cache_dir=tmp_path)


class RandomEncoder:
    """Instant stand-in with the embedding size of a CLIP text tower, for the full-size cache timing."""

    id = "test:random-512"
    weights_sha256 = "0" * 64

    def encode_texts(self, texts, batch_size=None, progress=False):
        generator = torch.Generator().manual_seed(0)
        return torch.nn.functional.normalize(torch.randn(len(texts), 512, generator=generator), dim=-1)


@pytest.mark.slow
def test_full_wordnet_cache_round_trip(tmp_path):
    # The load time (about 0.25 s for 70,794 labels) is measured in docs/corpora.md, not asserted here.
    corpus = load_corpus("wordnet")
    encoder = RandomEncoder()
    built = embed_corpus(encoder, corpus, cache_dir=tmp_path, progress=False)
    loaded = embed_corpus(encoder, corpus, cache_dir=tmp_path, progress=False)
    assert torch.equal(built, loaded) and loaded.shape == (len(corpus), 512)


def test_corpus_embedding_matches_direct_encoding(text_encoder, tmp_path):
    corpus = Corpus.from_labels(["teapot", "red", "Brain"], kind=["noun", "adjective", "concept"])
    cached = embed_corpus(text_encoder, corpus, cache_dir=tmp_path, progress=False)
    direct = text_encoder.encode_texts(["The nice teapot.", "This is a red photo.", "A medical image of Brain."])
    assert torch.allclose(cached, torch.nn.functional.normalize(direct.float(), dim=-1), atol=1e-5)
