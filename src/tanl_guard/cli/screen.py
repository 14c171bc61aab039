# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard screen STUDIES_DIR``: a verdict (accept, reject, unreadable) for every study of a folder."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__

__all__ = ["screen", "EXIT_REJECTED", "EXIT_UNREADABLE"]

EXIT_REJECTED, EXIT_UNREADABLE = 3, 4


def _read_labels(id_label: tuple[str, ...], id_labels: Path | None) -> list[str]:
    from ..corpora import read_label_file  # the one label-file format of the project

    labels = list(id_label) + (read_label_file(id_labels) if id_labels is not None else [])
    return list(dict.fromkeys(labels))


def _threshold(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    from ..guard import ThresholdPolicy

    try:
        return ThresholdPolicy.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _view(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ..dicom import ViewSpec

    try:
        ViewSpec.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _detector_choices() -> list[str]:
    from ..guard import detector_names

    return list(detector_names())


def _policy_choices() -> list[str]:
    from ..guard import STUDY_POLICIES

    return list(STUDY_POLICIES)


_DETECTOR_HELP = (
    "Label gate (tanl, neglabel, mcm, adaneg: joint image-text embeddings against ID and negative labels), feature "
    "gate (knn, mahalanobis: image features against the --reference images, threshold calibrated on held-out "
    "references), or both fused (e.g. tanl+knn). Default: tanl+knn with --reference, tanl without."
)


def _print_summary(report: Any, guard: Any, run_info: dict[str, Any]) -> None:
    counts = report.counts()
    seconds = report.seconds
    rows = [
        ("studies", str(len(report.studies)) + (f" ({report.resumed} from the checkpoint)" if report.resumed else "")),
        ("accepted", str(counts["accept"])),
        ("rejected (out of distribution)", str(counts["reject"])),
        ("unreadable studies", str(counts["unreadable"])),
        ("unreadable files outside any study", str(counts["orphan_files"])),
        ("files", ", ".join(f"{k} {v}" for k, v in report.file_counts.items())),
        ("views scored", str(report.views)),
        ("time", ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())),
    ]
    snapshot = guard.snapshot(n_negatives=8)
    if "threshold" in snapshot:
        rows.append(("threshold in force", f"{snapshot['threshold']:.3f}"))
    if not snapshot.get("health", {}).get("ok", True):
        rows.append(("WARNING", snapshot["health"]["problem"] + ": add reference ID images or check the labels"))
    if snapshot.get("selected_negatives"):
        rows.append(("leading activated negatives", ", ".join(snapshot["selected_negatives"])))
    width = max(len(k) for k, _ in rows)
    click.echo("")
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    click.echo("")
    click.echo(f"  {'study':<18} {'verdict':<10} {'id_score':>8}  reason / top negatives")
    for v in report.studies + report.orphans:
        score = f"{v.id_score:.3f}" if v.id_score is not None else "-"
        extra = v.reason or ""
        if v.top_negatives and v.verdict == "reject":
            extra += f" [{', '.join(v.top_negatives[:3])}]"
        click.echo(f"  {(v.study or '(no study)')[:16]:<18} {v.verdict:<10} {score:>8}  {extra}")
    if run_info:
        click.echo("")
        for key, value in run_info.items():
            click.echo(f"  {key}: {value}")


@click.command()
@click.argument("studies_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--encoder", "encoder_spec", default="biomedclip", show_default=True,
              help="biomedclip[:local-dir:PATH], open_clip:ARCH:PRETRAINED, or surrogate (offline, not medical).")
@click.option("--id-label", multiple=True, help="An in-distribution label (repeatable).")
@click.option("--id-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of ID labels, one per line.")
@click.option("--reference", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Reference ID images or studies (one subfolder per label when there are several labels).")
@click.option("--corpus", "corpus_spec", default="wordnet", show_default=True,
              help="Negative-label corpus: wordnet, dicom, wordnet+dicom, dicom:group=..., or a text file.")
@click.option("--detector", type=click.Choice(_detector_choices()), default=None, help=_DETECTOR_HELP)
@click.option("--feature-source", type=click.Choice(["trunk", "embedding"]), default=None,
              help="What a feature gate reads: the encoder's image-trunk features (default when it has them) or its "
                   "joint embeddings.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Views per gate batch (whole studies are batched together).")
@click.option("--view", default="slices:3", show_default=True, callback=_view, help="mid, mip or slices:K.")
@click.option("--study-policy", type=click.Choice(_policy_choices()), default="any", show_default=True,
              help="Reject a study when any / all / a majority of its series are rejected.")
@click.option("--threshold", "threshold_policy", default="adaptive", show_default=True, callback=_threshold,
              help="adaptive (each gate's own: TANL's Otsu split, the feature gate's calibrated one), a number in "
                   "[0, 1], or calibrated:RATE on the references.")
@click.option("--order", type=click.Choice(["shuffled", "as-found"]), default="shuffled", show_default=True,
              help="Screening order; output order is stable either way.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the order, of every detector and of TANL's cold start.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("tanl_guard_state.pt"), show_default=True, help="Checkpoint file (state + done studies).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Checkpoint after this many studies.")
@click.option("--resume", is_flag=True, help="Continue from --state: done studies are skipped, the state restored.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Corpus embedding cache.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
              help="MLflow tracking URI (default: sqlite:///./mlflow.db; env MLFLOW_TRACKING_URI).")
@click.option("--experiment", default="tanl-guard", show_default=True)
@click.option("--run-name", default=None)
@click.option("--no-audit", is_flag=True, help="Do not write an MLflow audit run.")
@click.option("--thumbnails", is_flag=True,
              help="Log a thumbnail of each rejected study to MLflow (off by default: pixels can carry burned-in "
                   "patient data).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per study on stdout, and nothing else.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON lines here.")
@click.option("--fail-on-reject", is_flag=True, help=f"Exit {EXIT_REJECTED} when a study was rejected.")
@click.option("--strict", is_flag=True, help=f"Exit {EXIT_UNREADABLE} when inputs were unreadable.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def screen(studies_dir: Path, encoder_spec: str, id_label: tuple[str, ...], id_labels: Path | None,
           reference: Path | None, corpus_spec: str, detector: str | None, feature_source: str | None, device: str,
           batch_size: int, view: str,
           study_policy: str, threshold_policy: Any, order: str, seed: int, state_path: Path,
           checkpoint_every: int, resume: bool, cache_dir: Path | None, tracking_uri: str | None, experiment: str,
           run_name: str | None, no_audit: bool, thumbnails: bool, as_json: bool, report: Path | None, fail_on_reject: bool,
           strict: bool, quiet: bool) -> None:
    """Screen every DICOM study under STUDIES_DIR: accept, reject (out of distribution) or unreadable."""
    from ..dicom import DicomScanConfig
    from ..guard import Guard, GuardPolicy
    from ..pipeline import ScreenConfig, Screener, load_checkpoint
    from ..pipeline.references import load_references

    labels = _read_labels(id_label, id_labels)
    if not labels and reference is None:
        raise click.UsageError("give the in-distribution labels (--id-label/--id-labels) and/or --reference images")
    if resume and not state_path.exists():
        raise click.UsageError(f"--resume: no checkpoint at {state_path}")
    dicom_config = DicomScanConfig(view=view)
    policy = GuardPolicy(threshold=threshold_policy, study_policy=study_policy)
    screen_config = ScreenConfig(view=view, batch_size=batch_size, order=order, seed=seed,
                                 checkpoint_every=checkpoint_every, state_path=str(state_path), resume=resume)
    status = sys.stderr
    try:
        references = load_references(reference, labels, view, dicom_config) if reference else None
        if not quiet:
            click.echo(f"tanl-guard {__version__}: loading encoder {encoder_spec!r} and corpus {corpus_spec!r}", err=True)
        guard = Guard.build(encoder=encoder_spec, labels=labels,
                            reference_images=references.images if references else None,
                            reference_sources=references.sources if references else None, corpus=corpus_spec,
                            detector=detector, policy=policy, device=device, feature_source=feature_source,
                            cache_dir=str(cache_dir) if cache_dir else None, progress=not quiet, seed=seed)
    except (ValueError, RuntimeError, ImportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    settings = {
        "encoder": guard.encoder.id, "detector": guard.detector_name, "corpus": corpus_spec,
        "corpus_size": len(guard.corpus), "id_labels": labels,
        "reference_images": sum(len(v) for v in (references.images if references else {}).values()),
        "threshold": str(threshold_policy), "study_policy": study_policy, "view": view, "batch_size": batch_size,
        "order": order, "seed": seed, "device": device,
        "detector_config": guard.detector_configs(),
    }
    if guard.calibration:
        settings["calibration"] = guard.calibration
    if guard.feature_calibration:
        settings["feature_calibration"] = guard.feature_calibration
    config_sha = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()

    audit_logger = None
    run_info: dict[str, Any] = {}
    if not no_audit:
        from ..integrations.mlflow import AuditConfig, AuditLogger

        resume_run = load_checkpoint(state_path).get("metadata", {}).get("run_id") if resume else None
        try:
            audit_logger = AuditLogger(AuditConfig(tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
                                                   log_thumbnails=thumbnails))
            audit_logger.start(params=settings, tags={
                "tanl_guard.version": __version__, "encoder.id": guard.encoder.id,
                "encoder.weights_sha256": guard.encoder.weights_sha256, "corpus.sha256": guard.corpus.sha256,
                "config.sha256": config_sha, "screen.order_seed": str(seed),
            }, resume_run_id=resume_run)
        except (ValueError, RuntimeError, OSError) as exc:
            raise click.ClickException(f"audit: {exc}") from exc

    progress_bar = None
    if not quiet:
        from tqdm import tqdm

        progress_bar = tqdm(total=0, unit="study", file=status, desc="screening", dynamic_ncols=True)

    def on_progress(done: int, total: int) -> None:
        if progress_bar is not None:
            progress_bar.total = total
            progress_bar.n = done
            progress_bar.refresh()

    screener = Screener(guard, screen_config, dicom_config, audit_logger, on_progress,
                        checkpoint_metadata={"run_id": getattr(audit_logger, "run_id", None)})
    failed = True
    try:
        result = screener.run(studies_dir)
        failed = False
    except (ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if progress_bar is not None:
            progress_bar.close()
        if audit_logger is not None:
            delivered = audit_logger.finish("FAILED" if failed else "FINISHED")
            tracking = audit_logger.config.resolved_tracking_uri()
            run_info = {"MLflow run": f"{audit_logger.run_id} in experiment {experiment!r} at {tracking}",
                        "open it with": "tanl-guard ui" + ("" if tracking_uri is None else f" --tracking-uri {tracking}")}
            if not delivered:
                pending = audit_logger.pending.get("records", 0)
                run_info["audit"] = f"MLflow unreachable: {pending} records kept in the local journal, sent on the next run"

    lines = result.lines()
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    if as_json:
        for line in lines:
            click.echo(json.dumps(line))
    else:
        _print_summary(result, guard, run_info)
    counts = result.counts()
    if fail_on_reject and counts["reject"]:
        sys.exit(EXIT_REJECTED)
    unreadable = counts["unreadable"] or counts["orphan_files"] or any(
        s.verdict == "unreadable" for v in result.studies for s in v.series)
    if strict and unreadable:
        sys.exit(EXIT_UNREADABLE)
