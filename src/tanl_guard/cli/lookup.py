# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard lookup KEY... DIR``: the files behind salted study, series or file keys, for someone who has both.

Verdicts, reports and the audit trail name studies only by salted keys, so they can leave the machine without
identifying anyone. The operator who holds the folder and the installation's salt finds the study behind a
rejected key by hashing the folder again, here, locally: the mapping is printed and never written anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["lookup"]


@click.command(epilog="""
\b
Examples:
  tanl-guard lookup 3f1c0e9a6d2b7c41 /data/export          # the files of a rejected study
  tanl-guard lookup 3f1c0e9a6d2b7c41 9b2e0d17c3aa5e60 /data/export --json
""")
@click.argument("keys", nargs=-1, required=True)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--salt-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The salt the keys were made with (default: $TANL_GUARD_SALT, else this installation's salt file).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key: its kind and the files' relative paths.")
def lookup(keys: tuple[str, ...], folder: Path, salt_file: Path | None, as_json: bool) -> None:
    """Show which files of FOLDER the study, series or file KEYS stand for (read-only, printed only).

    FOLDER is scanned with the salt the keys were made with; a key matches a study key, a series key or a file's
    path key. Relative paths are printed to stdout: they may contain names, so the output is for the operator's
    eyes and is never logged, journalled or written to a file by tanl-guard. Exit 1 when a key matches nothing.
    """
    from ..dicom import DicomScanConfig, scan_folder

    salt = salt_file.read_text(encoding="utf-8").strip() if salt_file is not None else None
    if salt_file is not None and not salt:
        raise click.UsageError(f"--salt-file {salt_file} is empty")
    try:
        scan = scan_folder(folder, DicomScanConfig(salt=salt))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    wanted = list(dict.fromkeys(k.strip() for k in keys))
    found: dict[str, dict[str, object]] = {key: {"key": key, "kind": None, "files": []} for key in wanted}
    for outcome in scan.outcomes:
        for kind, value in (("study", outcome.study_key), ("series", outcome.series_key), ("file", outcome.path_key)):
            entry = found.get(value) if value else None
            if entry is not None:
                entry["kind"] = entry["kind"] or kind
                entry["files"].append(outcome.rel_path)  # type: ignore[union-attr]
    missing = [key for key, entry in found.items() if not entry["files"]]
    for entry in found.values():
        if as_json:
            click.echo(json.dumps(entry))
            continue
        if not entry["files"]:
            click.echo(f"{entry['key']}: no study, series or file of this folder has this key (other folder or salt?)")
            continue
        click.echo(f"{entry['key']}: {entry['kind']}, {len(entry['files'])} file(s)")  # type: ignore[arg-type]
        for rel in entry["files"]:  # type: ignore[union-attr]
            click.echo(f"  {rel}")
    if missing:
        raise SystemExit(1)
