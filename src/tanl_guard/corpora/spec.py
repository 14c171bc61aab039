# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Corpus spec strings: ``wordnet``, ``dicom:group=anatomy``, ``my_labels.txt``, ``wordnet+dicom`` ..."""

from __future__ import annotations

from pathlib import Path

from tanl_guard.corpora.corpus import Corpus, combine_corpora
from tanl_guard.corpora.dicom_concepts import load_dicom_concepts
from tanl_guard.corpora.user import load_user_corpus
from tanl_guard.corpora.wordnet import load_wordnet

__all__ = ["load_corpus", "parse_spec_part"]

_USAGE = (
    "corpus spec parts: wordnet | wordnet:nouns | wordnet:adjectives | wordnet:synonyms (combinable, e.g. "
    "wordnet:nouns,synonyms) | dicom | dicom:cid=4,29 | dicom:group=anatomy,devices | dicom:scheme=SCT,RADLEX "
    "(filters joined by ';') | file:PATH[;kind=KIND] | PATH; parts joined by '+'"
)


def _split_options(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for option in filter(None, (o.strip() for o in text.split(";"))):
        key, sep, values = option.partition("=")
        if not sep:
            raise ValueError(f"expected key=value in {option!r}; {_USAGE}")
        out.setdefault(key.strip().lower(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return out


def parse_spec_part(part: str) -> Corpus:
    """Load one ``+``-free spec part.

    Args:
        part: e.g. ``"wordnet:nouns"``, ``"dicom:group=anatomy;scheme=SCT"``, ``"file:neg.txt;kind=concept"``,
            or a path to an existing file.

    Raises:
        ValueError: an unknown spec.
        FileNotFoundError: a file part that does not exist.
    """
    part = part.strip()
    source, _, rest = part.partition(":")
    source = source.lower()
    if source == "wordnet" and not Path(part).exists():
        tokens = {t.strip().lower() for t in rest.split(",") if t.strip()}
        unknown = tokens - {"nouns", "adjectives", "synonyms"}
        if unknown:
            raise ValueError(f"unknown wordnet options {sorted(unknown)}; {_USAGE}")
        pos = tokens & {"nouns", "adjectives"} or {"nouns", "adjectives"}
        return load_wordnet(nouns="nouns" in pos, adjectives="adjectives" in pos, synonyms="synonyms" in tokens)
    if source == "dicom" and not Path(part).exists():
        options = _split_options(rest)
        unknown = set(options) - {"cid", "group", "scheme"}
        if unknown:
            raise ValueError(f"unknown dicom options {sorted(unknown)}; {_USAGE}")
        try:
            cids = [int(c) for c in options.get("cid", [])]
        except ValueError as exc:
            raise ValueError(f"CIDs must be integers in {part!r}") from exc
        return load_dicom_concepts(cids=cids, groups=options.get("group", []), schemes=options.get("scheme", []))
    if source == "file":
        path_text, _, opts = rest.partition(";")
        options = _split_options(opts)
        kind = options.get("kind", ["user"])[0]
        return load_user_corpus(path_text, kind=kind)
    if Path(part).is_file():
        return load_user_corpus(part)
    raise ValueError(f"unknown corpus spec {part!r} (not a known source and no such file); {_USAGE}")


def load_corpus(spec: str | Corpus) -> Corpus:
    """Load a corpus from a spec string; ``+`` joins parts, which are combined in order and de-duplicated.

    Examples: ``"wordnet"``, ``"wordnet:nouns"``, ``"wordnet:adjectives"``, ``"dicom"``, ``"dicom:cid=4,29"``,
    ``"dicom:group=anatomy"``, ``"dicom:scheme=SCT"``, ``"dicom:group=devices;scheme=SCT"``, ``"negatives.txt"``,
    ``"file:negatives.txt;kind=concept"``, ``"wordnet+dicom:group=anatomy+negatives.txt"``.

    Args:
        spec: the spec (a :class:`Corpus` is returned unchanged).

    Returns:
        The corpus; its ``name`` is the spec.
    """
    if isinstance(spec, Corpus):
        return spec
    parts = [p for p in spec.split("+") if p.strip()]
    if not parts:
        raise ValueError(f"empty corpus spec; {_USAGE}")
    loaded = [parse_spec_part(p) for p in parts]
    if len(loaded) == 1:
        corpus = loaded[0]
        return Corpus(corpus.labels, corpus.kinds, corpus.sources, name=spec)
    return combine_corpora(*loaded, name=spec)
