"""Guard.build filters the corpus against the ID labels with the encoder in use."""

from __future__ import annotations

from tanl_guard.corpora import Corpus
from tanl_guard.guard import Guard


def test_synonyms_of_the_id_label_leave_the_corpus(surrogate, tmp_path):
    corpus = Corpus.from_labels(["MRI of the brain", "brain MRIs", "teapot", "espresso", "bicycle"], kind="noun")
    kept = Guard.build(encoder=surrogate, labels=["brain MRI"], corpus=corpus, cache_dir=str(tmp_path),
                       near_id_threshold=0.85).corpus.labels
    # "brain MRIs" goes by string rule (plural), "MRI of the brain" by its cosine to the ID anchor (0.87 here)
    assert set(kept) == {"teapot", "espresso", "bicycle"}
    unfiltered = Guard.build(encoder=surrogate, labels=["brain MRI"], corpus=corpus, cache_dir=str(tmp_path),
                             near_id_threshold=None).corpus.labels
    assert "MRI of the brain" in unfiltered and "brain MRIs" not in unfiltered
