# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest

from tanl_guard.corpora import dicom_groups, load_corpus, load_dicom_concepts
from tanl_guard.corpora.dicom_concepts import dicom_cid_names, dicom_concepts

pytest.importorskip("pydicom")


def test_all_concepts():
    assert 18_000 < len(dicom_concepts()) < 20_000
    corpus = load_dicom_concepts()
    assert 17_000 < len(corpus) <= len(dicom_concepts())
    assert set(corpus.kinds) == {"concept"}
    assert {"dicom:SCT", "dicom:DCM", "dicom:LN", "dicom:RADLEX"} <= set(corpus.source_counts())
    assert "A1" not in corpus.labels and "T2" not in corpus.labels  # codes, not words


def test_cid_selection_anatomy_and_modality():
    assert dicom_cid_names()[4] == "AnatomicRegion"
    anatomy = load_corpus("dicom:cid=4")
    assert {"Brain", "Liver", "Lung", "Knee", "Abdomen"} <= set(anatomy.labels)
    assert 300 < len(anatomy) < 400
    both = load_corpus("dicom:cid=4,29")
    assert {"Brain", "Computed Tomography", "Magnetic Resonance"} <= set(both.labels)


def test_named_groups():
    groups = dicom_groups()
    assert {"anatomy", "modalities", "devices", "findings", "procedures", "contrast"} <= set(groups)
    assert "Brain" in load_corpus("dicom:group=anatomy").labels
    assert "Computed Tomography" in load_corpus("dicom:group=modalities").labels
    assert "Stent" in load_corpus("dicom:group=devices").labels
    assert "Ground glass opacity" in load_corpus("dicom:group=findings").labels
    assert "Transthoracic echocardiography" in load_corpus("dicom:group=procedures").labels
    for name in groups:
        assert len(load_dicom_concepts(groups=[name])) > 20


def test_scheme_and_combined_filters():
    radlex = load_corpus("dicom:scheme=RADLEX")
    assert set(radlex.sources) == {"dicom:RADLEX"} and 50 < len(radlex) < 100
    sct_anatomy = load_corpus("dicom:group=anatomy;scheme=sct")
    assert set(sct_anatomy.sources) == {"dicom:SCT"}
    assert len(sct_anatomy) < len(load_corpus("dicom:group=anatomy"))


def test_bad_selectors():
    with pytest.raises(KeyError):
        load_corpus("dicom:group=nonsense")
    with pytest.raises(KeyError):
        load_corpus("dicom:cid=999999")
    with pytest.raises(KeyError):
        load_corpus("dicom:scheme=NOPE")
    with pytest.raises(ValueError):
        load_corpus("dicom:colour=red")
