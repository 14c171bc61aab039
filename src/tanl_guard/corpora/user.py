# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""User corpora: a UTF-8 text file with one label per line."""

from __future__ import annotations

from pathlib import Path

from tanl_guard.corpora.corpus import Corpus

__all__ = ["read_label_file", "load_user_corpus"]


def read_label_file(path: str | Path) -> list[str]:
    """The labels of a text file: one per line; blank lines and lines starting with ``#`` are skipped, and
    anything after `` #`` on a line is a comment.

    Args:
        path: the file.
    """
    labels = []
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():
        text = line.split(" #", 1)[0].strip()
        if text and not text.startswith("#"):
            labels.append(text)
    return labels


def load_user_corpus(path: str | Path, kind: str = "user") -> Corpus:
    """A corpus from a label file (see :func:`read_label_file`), cleaned and de-duplicated.

    Args:
        path: the file.
        kind: the kind given to every label (picks the prompt template): ``"user"`` (default, "The nice {}."),
            ``"noun"``, ``"adjective"`` or ``"concept"``.
    """
    path = Path(path)
    return Corpus.from_labels(read_label_file(path), kind=kind, source=f"user:{path.name}", name=str(path))
