# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Build the shipped WordNet word lists from the WordNet 3.0 database files (NegLabel's recipe).

NegLabel (Jiang et al., ICLR 2024) ships one text file per WordNet lexicographer file: ``adj.all``, ``adj.pert``,
``adj.ppl`` and every ``noun.*`` file except ``noun.animal`` and ``noun.food``. Each holds the lemmas of that file's
synsets, underscores turned into spaces, duplicates removed. This module rebuilds the same lists from the Princeton
database files (``data.noun``, ``data.adj``; Debian package ``wordnet-base``) and writes them as one gzip'd TSV
(``word``, ``kind``, ``lexfiles``, ``head``), one row per distinct (word, kind), so users need no WordNet install.

Run once by a maintainer::

    apt-get download wordnet-base && dpkg -x wordnet-base_*.deb /tmp/wn
    python -m tanl_guard.corpora.wordnet_build --wordnet-dir /tmp/wn/usr/share/wordnet \\
        --out src/tanl_guard/corpora/data
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from tanl_guard.corpora.wordnet import WORDNET_FILE_NAME

__all__ = [
    "WORDNET_LEXNAMES",
    "NOUN_EXCLUDED_LEXFILES",
    "ADJECTIVE_LEXFILES",
    "read_lexnames",
    "iter_synset_lemmas",
    "build_wordnet_lists",
    "write_wordnet_lists",
    "main",
]

# The standard WordNet 3.0 lexicographer file numbers (the ``lexnames`` file; Debian's wordnet-base omits it).
WORDNET_LEXNAMES: dict[int, str] = dict(
    enumerate(
        [
            "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
            "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
            "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
            "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
            "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
            "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
            "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
            "verb.weather", "adj.ppl",
        ]
    )
)  # fmt: skip

# NegLabel's shipped txtfiles lack these two noun files.
NOUN_EXCLUDED_LEXFILES: tuple[str, ...] = ("noun.animal", "noun.food")
ADJECTIVE_LEXFILES: tuple[str, ...] = ("adj.all", "adj.pert", "adj.ppl")

# data.adj marks syntactic position after the lemma: (a) attributive, (p) predicative, (ip) immediately postnominal.
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def read_lexnames(wordnet_dir: str | Path) -> dict[int, str]:
    """The lexicographer file names by number: the ``lexnames`` file if present, else the WordNet 3.0 table.

    Args:
        wordnet_dir: folder holding the WordNet database files.
    """
    path = Path(wordnet_dir) / "lexnames"
    if not path.is_file():
        return dict(WORDNET_LEXNAMES)
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            table[int(parts[0])] = parts[1]
    return table


def iter_synset_lemmas(data_file: str | Path) -> Iterator[tuple[int, str, bool]]:
    """Yield ``(lexfile number, lemma, is_head)`` for every word of every synset of a ``data.<pos>`` file.

    In file order. Lemmas come back as WordNet writes them (case kept, underscores turned into spaces, adjective
    position markers such as ``(a)`` removed); ``is_head`` marks the synset's first lemma (NLTK's synset name).

    Args:
        data_file: a WordNet ``data.noun`` / ``data.adj`` file.
    """
    with open(data_file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("  "):  # the licence header lines start with two spaces
                continue
            fields = line.split(" ")
            # synset_offset lex_filenum ss_type w_cnt(hex) word lex_id [word lex_id ...] ...
            lexfile = int(fields[1])
            n_words = int(fields[3], 16)
            for i in range(n_words):
                word = _ADJ_MARKER.sub("", fields[4 + 2 * i]).replace("_", " ").strip()
                if word:
                    yield lexfile, word, i == 0


def build_wordnet_lists(wordnet_dir: str | Path) -> list[tuple[str, str, str, int]]:
    """Rows ``(word, kind, lexfiles, head)`` following NegLabel's recipe.

    Nouns come from every ``noun.*`` lexicographer file except :data:`NOUN_EXCLUDED_LEXFILES`, adjectives from
    :data:`ADJECTIVE_LEXFILES`. One row per distinct (word, kind) with exact spelling, in order of first
    occurrence by lexicographer file number then file order; ``lexfiles`` lists every included file holding the
    word (comma-separated); ``head`` is 1 when the word is the first lemma of at least one included synset.
    NegLabel's lists hold one word per synset (the head): their sizes (58,101 nouns + 11,453 adjectives after
    its de-duplication against ImageNet) are matched by the heads, not by all lemmas (about 120k). Synonyms are
    shipped too, flagged ``head = 0``, for users who want the larger pool. Case-insensitive de-duplication and
    the adjective-also-noun rule are applied at load time (:mod:`tanl_guard.corpora.corpus`), not here, so the
    shipped lists stay faithful to WordNet.

    Args:
        wordnet_dir: folder holding ``data.noun`` and ``data.adj``.
    """
    wordnet_dir = Path(wordnet_dir)
    lexnames = read_lexnames(wordnet_dir)
    rows: list[tuple[str, str, str]] = []
    for kind, data_name in (("noun", "data.noun"), ("adjective", "data.adj")):
        by_word: dict[str, list[int]] = {}
        heads: set[str] = set()
        for lexfile, word, is_head in iter_synset_lemmas(wordnet_dir / data_name):
            name = lexnames[lexfile]
            if kind == "noun" and (not name.startswith("noun.") or name in NOUN_EXCLUDED_LEXFILES):
                continue
            if kind == "adjective" and name not in ADJECTIVE_LEXFILES:
                continue
            if is_head:
                heads.add(word)
            files = by_word.setdefault(word, [])
            if lexfile not in files:
                files.append(lexfile)
        ordered = sorted(by_word.items(), key=lambda item: min(item[1]))  # stable: file order within a lexfile
        rows.extend(
            (word, kind, ",".join(lexnames[f] for f in sorted(files)), int(word in heads)) for word, files in ordered
        )
    return rows


def write_wordnet_lists(rows: Sequence[tuple[str, str, str, int]], out_dir: str | Path) -> Path:
    """Write the rows as a gzip'd TSV (header ``word kind lexfiles head``), byte-reproducible (mtime 0).

    Args:
        rows: from :func:`build_wordnet_lists`.
        out_dir: destination folder (created if needed).

    Returns:
        The written file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = "word\tkind\tlexfiles\thead\n" + "".join(f"{w}\t{k}\t{f}\t{h}\n" for w, k, f, h in rows)
    path = out_dir / WORDNET_FILE_NAME
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(text.encode("utf-8"))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m tanl_guard.corpora.wordnet_build --wordnet-dir DIR --out DIR``.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", required=True, help="folder with data.noun, data.adj (WordNet 3.0)")
    parser.add_argument("--out", required=True, help="output folder, e.g. src/tanl_guard/corpora/data")
    args = parser.parse_args(argv)
    rows = build_wordnet_lists(args.wordnet_dir)
    path = write_wordnet_lists(rows, args.out)
    n_noun = sum(1 for r in rows if r[1] == "noun")
    n_head = sum(r[3] for r in rows)
    print(f"wrote {path}: {n_noun} nouns, {len(rows) - n_noun} adjectives ({n_head} synset heads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
