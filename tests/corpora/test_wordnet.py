# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tanl_guard.corpora import load_corpus, load_wordnet, normalize_label
from tanl_guard.corpora.wordnet import wordnet_rows
from tanl_guard.corpora.wordnet_build import build_wordnet_lists, iter_synset_lemmas, main, write_wordnet_lists

DATA = Path(__file__).resolve().parents[2] / "src" / "tanl_guard" / "corpora" / "data"


def test_shipped_files_small_and_licensed():
    assert (DATA / "wordnet_words.tsv.gz").stat().st_size < 2_000_000
    licence = (DATA / "WORDNET_LICENSE.txt").read_text()
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in licence


def test_default_pool_sizes_match_neglabel():
    corpus = load_wordnet()
    counts = corpus.kind_counts()
    # NegLabel/OpenOOD-VLM: 58,101 nouns + 11,453 adjectives after removing ImageNet names; ours before that.
    assert counts == {"noun": 58514, "adjective": 12280}
    assert 69_000 < len(corpus) < 72_000
    assert load_wordnet(synonyms=True).kind_counts()["noun"] > 100_000


def test_known_words_and_kinds():
    corpus = load_wordnet()
    kind_of = {normalize_label(w): k for w, k in zip(corpus.labels, corpus.kinds)}
    assert kind_of["teapot"] == "noun" and kind_of["toilet seat"] == "noun"
    assert kind_of["red"] == "noun"  # "red" is also a noun, so NegLabel's rule drops the adjective
    assert kind_of["able"] == "adjective" and kind_of["abaxial"] == "adjective"
    adjectives = load_corpus("wordnet:adjectives")
    assert "red" in adjectives.labels and set(adjectives.kinds) == {"adjective"}
    assert ("red", "adjective") in {(w, k) for w, k, _, _ in wordnet_rows()}


def test_animal_and_food_lexfiles_excluded():
    rows = wordnet_rows()
    lexfiles = {f for _, _, files, _ in rows for f in files.split(",")}
    assert "noun.animal" not in lexfiles and "noun.food" not in lexfiles
    assert {"adj.all", "adj.pert", "adj.ppl", "noun.Tops", "noun.artifact", "noun.person"} <= lexfiles
    words = {normalize_label(w) for w in load_wordnet(synonyms=True).labels}
    for word in ("aardvark", "golden retriever", "pizza", "spaghetti"):  # only in noun.animal / noun.food
        assert word not in words
    assert "dog" in words  # also in noun.person and noun.artifact, as in NegLabel's lists


def test_no_adjective_is_also_a_noun_and_no_duplicates():
    corpus = load_wordnet()
    keys = [normalize_label(w) for w in corpus.labels]
    assert len(set(keys)) == len(keys)
    nouns = {k for k, kind in zip(keys, corpus.kinds) if kind == "noun"}
    assert not any(k in nouns for k, kind in zip(keys, corpus.kinds) if kind == "adjective")
    assert all("_" not in w for w in corpus.labels[:5000])


_NOUN_LINES = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived  \n"
    "02084071 05 n 02 dog 0 domestic_dog 0 000 | a member of the genus Canis  \n"
    "04398044 06 n 02 teapot 0 dog 1 000 | pot for brewing tea  \n"
    "07873807 13 n 01 pizza 0 000 | Italian open pie  \n"
)
_ADJ_LINES = (
    "00001740 00 a 01 able 0 000 | having the necessary means  \n"
    "00002312 00 s 02 abaxial 0 dorsal(a) 4 000 | facing away from the axis  \n"
    "00002527 01 a 01 red 0 000 | of a red colour  \n"
    "01234567 02 r 01 quickly 0 000 | an adverb  \n"
)


def test_builder_on_database_lines(tmp_path):
    (tmp_path / "data.noun").write_text(_NOUN_LINES)
    (tmp_path / "data.adj").write_text(_ADJ_LINES)
    assert list(iter_synset_lemmas(tmp_path / "data.adj"))[:3] == [
        (0, "able", True),
        (0, "abaxial", True),
        (0, "dorsal", False),
    ]
    rows = build_wordnet_lists(tmp_path)
    assert rows == [
        ("entity", "noun", "noun.Tops", 1),
        ("teapot", "noun", "noun.artifact", 1),
        ("dog", "noun", "noun.artifact", 0),
        ("able", "adjective", "adj.all", 1),
        ("abaxial", "adjective", "adj.all", 1),
        ("dorsal", "adjective", "adj.all", 0),
        ("red", "adjective", "adj.pert", 1),
    ]
    assert main(["--wordnet-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    path = tmp_path / "out" / "wordnet_words.tsv.gz"
    assert gzip.open(path, "rt").read().splitlines()[:2] == ["word\tkind\tlexfiles\thead", "entity\tnoun\tnoun.Tops\t1"]
    first = path.read_bytes()
    write_wordnet_lists(rows, tmp_path / "out")
    assert path.read_bytes() == first  # reproducible (gzip mtime 0)


@pytest.mark.skipif(not Path("/tmp/wn/usr/share/wordnet/data.noun").is_file(), reason="WordNet database not unpacked")
def test_shipped_lists_equal_a_fresh_build(tmp_path):
    main(["--wordnet-dir", "/tmp/wn/usr/share/wordnet", "--out", str(tmp_path)])
    assert (tmp_path / "wordnet_words.tsv.gz").read_bytes() == (DATA / "wordnet_words.tsv.gz").read_bytes()
