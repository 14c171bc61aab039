# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Run the demo: build the folder, screen it with ``tanl-guard screen``, compare with what each study is.

The folder is screened twice with the same references: by the guard as it ships with references (the fused
``tanl+knn`` gate, with an MLflow audit run), and by TANL alone (``--detector tanl``, no audit run), so that every
input shows what each said.

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

    import click

    from ..cli.main import cli

    common = [
        "screen", str(demo.studies),
        "--encoder", args.encoder,
        *[item for label in ID_LABELS for item in ("--id-label", label)],
        "--reference", str(demo.references),
        "--corpus", args.corpus,
        "--batch-size", "16",
    ]
    report, tanl_report = out / "verdicts.jsonl", out / "verdicts_tanl_alone.jsonl"
    runs = [
        [*common, "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--run-name", "demo",
         "--state", str(out / "state.pt"), "--report", str(report)],
        [*common, "--detector", "tanl", "--no-audit", "--quiet", "--state", str(out / "state_tanl_alone.pt"),
         "--report", str(tanl_report)],
    ]
    for command in runs:
        print("\n$ tanl-guard " + shlex.join(command), flush=True)
        try:
            cli.main(command, prog_name="tanl-guard", standalone_mode=False)
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code

    _compare(demo, report, tanl_report)
    print(f"\nAudit run written to {out / 'mlflow.db'}. Open it with:\n"
          f"  .venv/bin/tanl-guard ui --tracking-uri sqlite:///{out / 'mlflow.db'}\n"
          f"then browse http://127.0.0.1:5000 (experiment 'tanl-guard', run 'demo').")
    return 0


def _compare(demo, report: Path, tanl_report: Path) -> None:
    """Map hashed study keys back to the demo's own input names (possible here because the demo knows the salt).

    Args:
        demo: the demo folder.
        report: the JSON lines of the fused guard (the guard as it ships with references).
        tanl_report: the JSON lines of TANL alone on the same folder.
    """
    from ..dicom import DicomScanConfig, scan_folder

    scan = scan_folder(demo.studies, DicomScanConfig())
    name_of: dict[str, str] = {}
    for o in scan.outcomes:  # sorted by path: a study is named after its first file
        if o.study_key:
            name_of.setdefault(o.study_key, o.rel_path.split("/")[0])
    from ..guard import ACCEPT, REJECT, count_studies

    verdicts = [json.loads(line) for line in report.read_text().splitlines()]
    alone = {v["study"]: v for v in map(json.loads, tanl_report.read_text().splitlines()) if v["study"] is not None}
    counts = count_studies(verdicts)  # the one study count, as in the screen summary and `audit summary`
    print("\nWhat each input is, and what the guard said (surrogate encoder: a demo, not a medical model).")
    print("tanl+knn: the guard as it ships with references (kNN score / its calibrated threshold); tanl: TANL alone.")
    print(f"  {'input':<18} {'from':<32} {'is':<7} {'tanl+knn':<11} {'id_score':>8} {'knn':>13}  {'tanl alone':<11}")
    right = {"tanl+knn": 0, "tanl": 0}
    total = 0
    for v in verdicts:
        if v["study"] is None:
            print(f"  {'(file)':<18} {'':<32} {'broken':<7} {v['verdict']:<11} {'-':>8}  {v['reason']}")
            continue
        name = name_of.get(v["study"], "?")
        kind = demo.expected.get(name, "?")
        other = alone.get(v["study"], {})
        score = "-" if v["id_score"] is None else f"{v['id_score']:.3f}"
        knn = "-" if v.get("feature_score") is None else f"{v['feature_score']:.3f}/{v['feature_threshold']:.3f}"
        print(f"  {name:<18} {demo.sources.get(name, ''):<32} {kind:<7} {v['verdict']:<11} {score:>8} {knn:>13}  "
              f"{other.get('verdict', '-'):<11}")
        if kind in ("id", "ood") and v["verdict"] in (ACCEPT, REJECT):
            total += 1
            right["tanl+knn"] += (kind == "id") == (v["verdict"] == ACCEPT)
            right["tanl"] += (kind == "id") == (other.get("verdict") == ACCEPT)
    print(f"\n  {counts.studies} studies: {counts.accept} accepted, {counts.reject} rejected, {counts.unreadable} "
          f"unreadable; {counts.orphan_files} unreadable file(s) outside any study (tanl+knn).")
    print(f"  {right['tanl+knn']} of {total} readable studies judged as their kind by tanl+knn, "
          f"{right['tanl']} by TANL alone.")


if __name__ == "__main__":
    sys.exit(main())
