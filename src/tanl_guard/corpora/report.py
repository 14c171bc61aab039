# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Corpus summaries for the CLI (``tanl-guard corpus build|show``)."""

from __future__ import annotations

from typing import Any

from tanl_guard.corpora.corpus import Corpus
from tanl_guard.corpora.prompts import resolve_templates
from tanl_guard.corpora.spec import load_corpus

__all__ = ["build_corpus_report", "format_corpus"]


def build_corpus_report(spec: str | Corpus) -> dict[str, Any]:
    """Sizes and hash of a corpus, JSON-ready.

    Args:
        spec: a corpus spec (see :func:`load_corpus`) or a loaded corpus.

    Returns:
        ``{"name", "size", "sha256", "kinds": {kind: n}, "sources": {source: n}, "templates": {kind: template}}``.
    """
    corpus = load_corpus(spec)
    return {
        "name": corpus.name,
        "size": len(corpus),
        "sha256": corpus.sha256,
        "kinds": dict(sorted(corpus.kind_counts().items())),
        "sources": dict(sorted(corpus.source_counts().items())),
        "templates": resolve_templates(corpus.kinds),
    }


def format_corpus(corpus: Corpus, limit: int | None = 20) -> str:
    """A plain-text view: a summary line, then ``index  kind  source  label`` for the first ``limit`` labels.

    Args:
        corpus: the corpus.
        limit: how many labels to list (None = all).
    """
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(corpus.kind_counts().items()))
    lines = [f"{corpus.name or 'corpus'}: {len(corpus)} labels ({kinds or 'empty'}), sha256 {corpus.sha256[:16]}"]
    shown = len(corpus) if limit is None else min(limit, len(corpus))
    width = len(str(max(shown - 1, 0)))
    for i in range(shown):
        lines.append(f"{i:>{width}}  {corpus.kinds[i]:<9}  {corpus.sources[i]:<24}  {corpus.labels[i]}")
    if shown < len(corpus):
        lines.append(f"... {len(corpus) - shown} more")
    return "\n".join(lines)
