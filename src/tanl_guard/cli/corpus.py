# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard corpus show|build``: inspect a negative-label corpus, or embed it into the cache."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["corpus"]


@click.group()
def corpus() -> None:
    """Negative-label corpora: WordNet, DICOM PS3.16 concepts, your own files."""


@corpus.command("show")
@click.argument("spec", default="wordnet")
@click.option("--limit", type=int, default=20, show_default=True, help="Labels to list (0 = none).")
@click.option("--json", "as_json", is_flag=True, help="Sizes and hash as JSON.")
def show(spec: str, limit: int, as_json: bool) -> None:
    """Show a corpus: sizes by kind and source, hash, and its first labels (SPEC: wordnet, dicom, a file, a+b)."""
    from ..corpora import build_corpus_report, format_corpus, load_corpus

    try:
        if as_json:
            click.echo(json.dumps(build_corpus_report(spec), indent=2))
            return
        click.echo(format_corpus(load_corpus(spec), limit=limit))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


@corpus.command("build", epilog="""
\b
Examples:
  tanl-guard corpus build wordnet+dicom --encoder biomedclip:local-dir:/models/biomedclip
  tanl-guard corpus build my_negatives.txt --encoder surrogate --cache-dir /srv/tanl_guard/cache
""")
@click.argument("spec", default="wordnet")
@click.option("--encoder", "encoder_spec", default="biomedclip", show_default=True,
              help="The encoder that will screen: biomedclip[:local-dir:PATH], open_clip:ARCH:PRETRAINED or surrogate "
                   "(embeddings are cached per encoder and weights).")
@click.option("--id-label", multiple=True,
              help="An ID label to remove from the corpus, with its plurals (repeatable). Not needed for the cache: "
                   "labels are cached one by one, so any later ID labels reuse it.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The embedding cache (default: $TANL_GUARD_CACHE/corpus_embeddings or "
                   "~/.cache/tanl_guard/corpus_embeddings); give screen the same --cache-dir.")
def build(spec: str, encoder_spec: str, id_label: tuple[str, ...], device: str, cache_dir: Path | None) -> None:
    """Embed a corpus (SPEC: wordnet, dicom, wordnet+dicom, a file ...) into the embedding cache.

    Later runs load it in seconds. Labels are cached in parts as they are embedded: an interrupted build resumes
    where it stopped, and corpora that share labels (wordnet and wordnet+dicom) share their embeddings.
    """
    from ..corpora import embed_corpus, load_corpus
    from ..encoders import resolve

    try:
        encoder = resolve(encoder_spec, device=device)
        loaded = load_corpus(spec).without_id_labels(id_label)
        embeddings = embed_corpus(encoder, loaded, cache_dir=str(cache_dir) if cache_dir else None, progress=True)
    except (ValueError, RuntimeError, ImportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(loaded)} labels embedded with {encoder.id}: {tuple(embeddings.shape)}, sha256 {loaded.sha256[:16]}")
