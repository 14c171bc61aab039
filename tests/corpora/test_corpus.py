# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import dataclasses

import pytest

from tanl_guard.corpora import (
    Corpus,
    build_corpus_report,
    combine_corpora,
    default_templates,
    label_variants,
    load_corpus,
    load_user_corpus,
    read_label_file,
)

USER_FILE = """# negatives for a brain-MRI classifier
teapot
  Toilet   seat   # trailing comment

TEAPOT
chest x-ray
#not a label
knee_joint
"""


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "negatives.txt"
    path.write_text(USER_FILE, encoding="utf-8")
    return path


def test_user_file(user_file):
    assert read_label_file(user_file) == ["teapot", "Toilet   seat", "TEAPOT", "chest x-ray", "knee_joint"]
    corpus = load_user_corpus(user_file)
    assert corpus.labels == ("teapot", "Toilet seat", "chest x-ray", "knee joint")
    assert set(corpus.kinds) == {"user"} and set(corpus.sources) == {"user:negatives.txt"}
    assert load_corpus(str(user_file)).labels == corpus.labels
    concept = load_corpus(f"file:{user_file};kind=concept")
    assert set(concept.kinds) == {"concept"}
    assert concept.prompts()[0] == "A medical image of teapot."


def test_deduplication_and_adjective_rule():
    a = Corpus.from_labels(["Red", "glass", "Brain MRI"], kind=["adjective", "adjective", "noun"], source="a")
    b = Corpus.from_labels(["red", "brain  mri", "crimson"], kind=["noun", "user", "adjective"], source="b")
    c = combine_corpora(a, b)
    # "Red" (adjective) goes: "red" also occurs as a noun; the noun keeps its place. "brain  mri" is a duplicate.
    assert c.labels == ("glass", "Brain MRI", "red", "crimson")
    assert c.kinds == ("adjective", "noun", "noun", "adjective")
    assert c.sources == ("a", "a", "b", "b")
    assert (a + b).labels == c.labels


def test_without_id_labels_variants():
    corpus = Corpus.from_labels(
        [
            "tumors",
            "Tumor",
            "brain mri",
            "Brain-MRI scan",
            "brain-MRI",
            "brain MRIs",
            "metastases",
            "vertebrae",
            "knee",
            "bodies",
        ],
        kind="noun",
        source="t",
    )
    kept = corpus.without_id_labels(["tumor", "Brain MRI", "a metastasis", "Vertebra", "body"])
    assert kept.labels == ("Brain-MRI scan", "knee")
    assert {"tumor", "tumors"} <= label_variants("Tumors") and {"brain mri", "brain mris"} <= label_variants(
        "Brain MRI"
    )


def test_wordnet_without_imagenet_like_labels():
    corpus = load_corpus("wordnet")
    kept = corpus.without_id_labels(["teapot", "toilet seat"])
    assert len(corpus) - len(kept) >= 2
    assert "teapot" not in kept.labels and "teapots" not in kept.labels


def test_combined_spec_and_hash():
    combined = load_corpus("wordnet+dicom:group=anatomy")
    counts = combined.kind_counts()
    assert counts["noun"] == 58514 and counts["concept"] > 900 and counts["adjective"] > 12000
    # "Brain" is a WordNet noun first, so the DICOM concept is a duplicate
    assert "Brain" not in combined.labels[-counts["concept"] :]
    assert combined.name == "wordnet+dicom:group=anatomy"
    again = load_corpus("wordnet+dicom:group=anatomy")
    assert again.sha256 == combined.sha256 and len(combined.sha256) == 64
    assert load_corpus("dicom:group=anatomy+wordnet").sha256 != combined.sha256  # order matters
    renamed = dataclasses.replace(combined, name="x", sources=tuple("s" for _ in combined.sources))
    assert renamed.sha256 == combined.sha256


def test_spec_errors(tmp_path):
    with pytest.raises(ValueError):
        load_corpus("nonsense_source_that_is_not_a_file")
    with pytest.raises(ValueError):
        load_corpus("wordnet:verbs")
    with pytest.raises(ValueError):
        load_corpus("")
    with pytest.raises(FileNotFoundError):
        load_corpus(f"file:{tmp_path / 'missing.txt'}")


def test_prompts_per_kind():
    corpus = Corpus.from_labels(["teapot", "red", "Brain", "x"], kind=["noun", "adjective", "concept", "user"])
    assert corpus.prompts() == ["The nice teapot.", "This is a red photo.", "A medical image of Brain.", "The nice x."]
    assert corpus.prompts({"noun": "a photo of a {}"})[0] == "a photo of a teapot"
    assert default_templates()["adjective"] == "This is a {} photo."
    with pytest.raises(KeyError):
        Corpus.from_labels(["a"], kind="verb").prompts()
    with pytest.raises(ValueError):
        corpus.prompts({"noun": "no slot"})


def test_subset_and_validation():
    corpus = Corpus.from_labels(["a1", "b1", "c1"], kind="noun")
    assert corpus.subset([2, 0]).labels == ("c1", "a1")
    with pytest.raises(ValueError):
        Corpus(("a",), ("noun", "noun"), ("s",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        corpus.labels = ()


def test_report_and_format():
    report = build_corpus_report("dicom:cid=4,29")
    assert report["size"] == sum(report["kinds"].values()) == sum(report["sources"].values())
    assert report["kinds"] == {"concept": report["size"]} and len(report["sha256"]) == 64
    assert report["templates"] == {"concept": "A medical image of {}."}
    from tanl_guard.corpora import format_corpus

    text = format_corpus(load_corpus("dicom:cid=4"), limit=3)
    lines = text.splitlines()
    assert lines[0].startswith("dicom:cid=4: ") and len(lines) == 5 and lines[-1].startswith("... ")
    assert len(format_corpus(Corpus.from_labels(["a"]), limit=None).splitlines()) == 2
