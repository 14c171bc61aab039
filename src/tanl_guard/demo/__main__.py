# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Run the demo: build the folder, screen it with ``tanl-guard screen``, compare with what each study is.

    python -m tanl_guard.demo [--out demo_out] [--corpus wordnet]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections import Counter
from pathlib import Path

from .data import ID_LABELS, build_demo_folder

DEMO_SALT = "tanl-guard-demo"  # fixed, so the demo can name its own studies; real runs use a per-install salt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--corpus", default="wordnet")
    parser.add_argument("--encoder", default="surrogate")
    args = parser.parse_args(argv)
    os.environ["TANL_GUARD_SALT"] = DEMO_SALT
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = args.out.resolve()

    print(f"Building the demo folder under {out} from images shipped in installed packages ...", flush=True)
    demo = build_demo_folder(out)
    print(f"  {len(demo.expected)} inputs: "
          + ", ".join(f"{n} {k}" for k, n in sorted(Counter(demo.expected.values()).items())), flush=True)

    from ..cli.main import cli

    report = out / "verdicts.jsonl"
    command = [
        "screen", str(demo.studies),
        "--encoder", args.encoder,
        *[item for label in ID_LABELS for item in ("--id-label", label)],
        "--reference", str(demo.references),
        "--corpus", args.corpus,
        "--batch-size", "16",
        "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}",
        "--run-name", "demo",
        "--state", str(out / "state.pt"),
        "--report", str(report),
    ]
    print("\n$ tanl-guard " + shlex.join(command), flush=True)
    import click

    try:
        cli.main(command, prog_name="tanl-guard", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code

    _compare(demo, report)
    print(f"\nAudit run written to {out / 'mlflow.db'}. Open it with:\n"
          f"  .venv/bin/tanl-guard ui --tracking-uri sqlite:///{out / 'mlflow.db'}\n"
          f"then browse http://127.0.0.1:5000 (experiment 'tanl-guard', run 'demo').")
    return 0


def _compare(demo, report: Path) -> None:
    """Map hashed study keys back to the demo's own input names (possible here because the demo knows the salt)."""
    from ..dicom import DicomScanConfig, scan_folder

    scan = scan_folder(demo.studies, DicomScanConfig())
    name_of: dict[str, str] = {}
    for o in scan.outcomes:  # sorted by path: a study is named after its first file
        if o.study_key:
            name_of.setdefault(o.study_key, o.rel_path.split("/")[0])
    from ..guard import count_studies

    verdicts = [json.loads(line) for line in report.read_text().splitlines()]
    counts = count_studies(verdicts)  # the one study count, as in the screen summary and `audit summary`
    print("\nWhat each input is, and what the guard said (surrogate encoder: a demo, not a medical model):")
    print(f"  {'input':<18} {'from':<32} {'is':<7} {'verdict':<11} {'id_score':>8}")
    right = total = 0
    for v in verdicts:
        if v["study"] is None:
            print(f"  {'(file)':<18} {'':<32} {'broken':<7} {v['verdict']:<11} {'-':>8}  {v['reason']}")
            continue
        name = name_of.get(v["study"], "?")
        kind = demo.expected.get(name, "?")
        score = "-" if v["id_score"] is None else f"{v['id_score']:.3f}"
        print(f"  {name:<18} {demo.sources.get(name, ''):<32} {kind:<7} {v['verdict']:<11} {score:>8}")
        if kind in ("id", "ood") and v["verdict"] in ("accept", "reject"):
            total += 1
            right += (kind == "id") == (v["verdict"] == "accept")
    print(f"\n  {counts.studies} studies: {counts.accept} accepted, {counts.reject} rejected, {counts.unreadable} "
          f"unreadable; {counts.orphan_files} unreadable file(s) outside any study.")
    print(f"  {right} of {total} readable studies judged as their kind.")


if __name__ == "__main__":
    sys.exit(main())
