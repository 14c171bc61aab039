# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard screen STUDIES_DIR``: a verdict (accept, reject, unreadable) for every study of a folder."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..guard.verdicts import ACCEPT, REJECT, UNREADABLE
from ..view_spec import ViewSpec

__all__ = ["screen", "EXIT_REJECTED", "EXIT_UNREADABLE", "EXIT_NOTHING_SCREENED", "EXIT_SIGTERM", "EXIT_SIGINT"]

EXIT_REJECTED, EXIT_UNREADABLE, EXIT_NOTHING_SCREENED = 3, 4, 5
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal number, as a shell reports a process the signal ended

_EXAMPLES = """
\b
Examples:
  # screen an export against brain MRI, JSON lines on stdout, audit run in ./mlflow.db
  tanl-guard screen /data/export --encoder biomedclip:local-dir:/models/biomedclip \\
      --id-label "brain MRI" --reference /data/reference_brain_mr --json > verdicts.jsonl
  # offline demo encoder, no audit run, fail a pipeline step when a study is rejected or unreadable
  tanl-guard screen /data/export --encoder surrogate --id-label "chest X-ray" --no-audit \\
      --fail-on-reject --strict
  # continue a screening that was stopped (SIGTERM, Ctrl-C, crash) where its checkpoint left it
  tanl-guard screen /data/export --id-label "brain MRI" --state /var/lib/tg/state.pt --resume

\b
Exit codes: 0 done; 1 runtime error (missing weights, bad checkpoint, busy --state/--report, ...); 2 usage error;
3 with --fail-on-reject when a study was rejected; 4 with --strict when inputs were unreadable; 5 with --strict
when nothing was screened (no DICOM study found); 143 stopped by SIGTERM and 130 by Ctrl-C, after the batch in
hand was judged and checkpointed (continue with --resume). 3 is checked before 4, and 4 before 5.
"""


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


def _view(ctx: click.Context, param: click.Parameter, value: str) -> ViewSpec:
    try:
        return ViewSpec.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class _RegistryChoice(click.Choice):
    """A choice read from a registry when first needed: importing the registry loads torch, which ``--version``
    and the CLI's import must not."""

    def __init__(self, values: Callable[[], Sequence[str]]) -> None:
        self._values = values
        self._loaded: tuple[str, ...] | None = None
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._values())
        return self._loaded

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:  # click's __init__ assigns the empty placeholder
        pass


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


def _tracking_uri(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ..integrations.mlflow.config import check_tracking_uri

    if value is None:
        return None
    try:
        return check_tracking_uri(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _outputs_inside_input(studies_dir: Path, state_path: Path, report: Path | None, tracking_uri: str | None,
                          no_audit: bool, work_dir: Path) -> list[str]:
    """The outputs this run would write inside the (read-only) input folder."""
    from ._files import inside

    outputs: list[tuple[str, Path]] = [("--state", state_path), ("--work-dir", work_dir)]
    if report is not None:
        outputs.append(("--report", report))
    if not no_audit:
        from ..integrations.mlflow.config import AuditConfig, sqlite_path

        config = AuditConfig(tracking_uri=tracking_uri)
        db = sqlite_path(config.resolved_tracking_uri())
        if db is not None:
            outputs.append(("the MLflow store (--tracking-uri)", db))
        outputs.append(("the audit journal", config.resolved_journal_dir()))
    return [f"{what} ({path})" for what, path in outputs if inside(path, studies_dir)]


def _engine_settings(engine: str, ray_address: str | None, workers: int, thumbnails: bool) -> Any:
    """The Ray engine's settings for ``--engine ray`` (None for the local engine), checked before anything runs."""
    if engine != "ray":
        if ray_address is not None:
            raise click.UsageError("--ray-address needs --engine ray")
        return None
    if thumbnails:
        raise click.UsageError("--thumbnails needs --engine local: with --engine ray the pixels stay on the workers")
    if workers == 0:
        raise click.UsageError("--engine ray needs at least one encoder worker (--workers 1 or more)")
    from ..integrations.ray import RayEngineConfig, import_ray

    try:
        import_ray()
    except ImportError as exc:  # names the extra to install
        raise click.ClickException(f"--engine ray: {exc}") from None
    return RayEngineConfig(address=ray_address, workers=workers)


def _print_summary(report: Any, guard: Any, run_info: dict[str, Any], studies_dir: Path) -> None:
    counts = report.counts()
    seconds = report.seconds
    found = report.found
    done = len(report.studies)
    studies = str(done) if not report.stopped else f"{done} of {found} (stopped)"
    rows = [
        ("studies", studies + (f" ({report.resumed} from the checkpoint)" if report.resumed else "")),
        ("accepted", str(counts[ACCEPT])),
        ("rejected (out of distribution)", str(counts[REJECT])),
        ("unreadable studies", str(counts[UNREADABLE])),
        ("unreadable files outside any study", str(counts["orphan_files"])),
        ("files", ", ".join(f"{k} {v}" for k, v in report.file_counts.items()) or "none"),
        ("views scored", str(report.views)),
        ("time", ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())),
    ]
    snapshot = guard.snapshot(n_negatives=8)
    screened_any = bool(snapshot.get("images_screened"))
    feature_threshold = snapshot.get("feature_gate", {}).get("threshold")
    if screened_any and "fusion" in snapshot and feature_threshold is not None:  # a fused guard: each gate's own
        rows.append(("label gate threshold", f"{snapshot['threshold']:.3f}"))
        rows.append(("feature gate threshold", f"{feature_threshold:.3f}"))
    elif screened_any and "threshold" in snapshot:
        rows.append(("threshold in force", f"{snapshot['threshold']:.3f}"))
    warmup = snapshot.get("fusion", {}).get("label_warmup")
    if screened_any and warmup:
        rows.append(("label gate", f"warming up: it refuses nothing until {warmup['refuses_from']} feature-accepted "
                                   f"views set its threshold ({warmup['seen']} so far; --state keeps them)"))
    if not snapshot.get("health", {}).get("ok", True):
        rows.append(("WARNING", snapshot["health"]["problem"] + ": add reference ID images or check the labels"))
    if screened_any and snapshot.get("selected_negatives"):
        rows.append(("leading activated negatives", ", ".join(snapshot["selected_negatives"])))
    width = max(len(k) for k, _ in rows)
    click.echo("")
    if found == 0:
        click.echo(f"  Nothing was screened: no DICOM study was found under {studies_dir}.")
        click.echo("")
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    if report.studies or report.orphans:
        click.echo("")
        click.echo(f"  {'study':<18} {'verdict':<10} {'id_score':>8}  reason / top negatives")
    for v in report.studies + report.orphans:
        score = f"{v.id_score:.3f}" if v.id_score is not None else "-"
        extra = v.reason or ""
        if v.top_negatives and v.verdict == REJECT:
            extra += f" [{', '.join(v.top_negatives[:3])}]"
        click.echo(f"  {(v.study or '(no study)')[:16]:<18} {v.verdict:<10} {score:>8}  {extra}")
    if run_info:
        click.echo("")
        for key, value in run_info.items():
            click.echo(f"  {key}: {value}")


class _Signals:
    """SIGTERM/SIGINT ask the screener to stop after the batch in hand; a second signal ends the process."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._screener: Any = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def attach(self, screener: Any) -> None:
        self._screener = screener
        if self.received is not None:
            screener.request_stop()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # asked twice: stop now, the way the signal normally would
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.received = signum
        click.echo(f"\n{signal.Signals(signum).name}: stopping after the batch in hand (again to stop at once)",
                   err=True)
        if self._screener is not None:
            self._screener.request_stop()


@click.command(epilog=_EXAMPLES)
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
@click.option("--detector", type=_RegistryChoice(_detector_choices), default=None, help=_DETECTOR_HELP)
@click.option("--feature-source", type=click.Choice(["trunk", "embedding"]), default=None,
              help="What a feature gate reads: the encoder's image-trunk features (default when it has them) or its "
                   "joint embeddings.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Views per gate batch (whole studies are batched together).")
@click.option("--view", default="slices:3", show_default=True, callback=_view, help="mid, mip or slices:K.")
@click.option("--study-policy", type=_RegistryChoice(_policy_choices), default="any", show_default=True,
              help="Reject a study when any / all / a majority of its series are rejected.")
@click.option("--threshold", "threshold_policy", default="adaptive", show_default=True, callback=_threshold,
              help="adaptive (each gate's own: TANL's Otsu split, the feature gate's calibrated one), a number in "
                   "[0, 1], or calibrated:RATE on the references.")
@click.option("--order", type=click.Choice(["shuffled", "as-found"]), default="shuffled", show_default=True,
              help="Screening order; output order is stable either way.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the order, of every detector and of TANL's cold start.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("tanl_guard_state.pt"), show_default=True,
              help="Checkpoint file (detector state, last committed batch, manifest and encoder hashes), signed with "
                   "this installation's secret; locked while a screen uses it.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the manifest, the verdict segments and (--engine ray) the embedding shards are kept "
                   "(default: STATE.work beside --state). Holds relative file paths: keep it private, outside "
                   "STUDIES_DIR.")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Decode worker processes, decoding ahead while this process encodes (0: decode in between; "
                   "can be faster on a small CPU, where workers take cores from the encoder); with --engine ray, "
                   "encoder actors on the cluster (each loads the weights once; a GPU each where the cluster has "
                   "one per actor).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Checkpoint after this many studies.")
@click.option("--resume", is_flag=True,
              help="Continue from --state: committed batches are skipped, the state restored.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Corpus embedding cache.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", callback=_tracking_uri,
              help="MLflow store: sqlite:////abs/path/mlflow.db, postgresql://..., or a tracking server "
                   "http(s)://host:port (default: sqlite:///./mlflow.db; env MLFLOW_TRACKING_URI). Other schemes, "
                   "file: and bare paths are refused.")
@click.option("--experiment", default="tanl-guard", show_default=True,
              help="MLflow experiment of the audit run (created on first use).")
@click.option("--run-name", default=None,
              help="Name of the audit run in the MLflow UI (default: what ran and when, e.g. "
                   "'screen tanl biomedclip 2026-05-01 22:40Z').")
@click.option("--no-audit", is_flag=True, help="Do not write an MLflow audit run.")
@click.option("--thumbnails", is_flag=True,
              help="Log a thumbnail of each rejected study to MLflow (off by default: pixels can carry burned-in "
                   "patient data).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per study on stdout, and nothing else.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON lines here (checked writable and locked before screening).")
@click.option("--fail-on-reject", is_flag=True, help=f"Exit {EXIT_REJECTED} when a study was rejected.")
@click.option("--strict", is_flag=True,
              help=f"Exit {EXIT_UNREADABLE} when inputs were unreadable or conflicting (files sharing an SOP Instance "
                   f"UID with other content), {EXIT_NOTHING_SCREENED} when no study was found.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: decode, embed and gate in this process; ray: embed on a Ray cluster's encoder actors "
                   "(pip install 'tanl-guard[ray]'), gate here. Same verdicts, same outputs.")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="--engine ray: the cluster (HOST:PORT or ray://...); default: a Ray instance on this machine "
                   "for the run.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def screen(studies_dir: Path, encoder_spec: str, id_label: tuple[str, ...], id_labels: Path | None,
           reference: Path | None, corpus_spec: str, detector: str | None, feature_source: str | None, device: str,
           batch_size: int, view: ViewSpec, study_policy: str, threshold_policy: Any, order: str, seed: int,
           state_path: Path, work_dir: Path | None, workers: int, checkpoint_every: int, resume: bool,
           cache_dir: Path | None, tracking_uri: str | None, experiment: str,
           run_name: str | None, no_audit: bool, thumbnails: bool, as_json: bool, report: Path | None, fail_on_reject: bool,
           strict: bool, engine: str, ray_address: str | None, quiet: bool) -> None:
    """Screen every DICOM study under STUDIES_DIR: accept, reject (out of distribution) or unreadable.

    STUDIES_DIR is only read: the checkpoint, the report and the audit store must lie outside it.
    """
    from ._files import LockedReport, OutputBusy, StateLock

    labels = _read_labels(id_label, id_labels)
    if not labels and reference is None:
        raise click.UsageError("give the in-distribution labels (--id-label/--id-labels) and/or --reference images")
    if resume and not state_path.exists():
        raise click.UsageError(f"--resume: no checkpoint at {state_path}")
    ray_config = _engine_settings(engine, ray_address, workers, thumbnails)
    explicit_work_dir = work_dir is not None
    work_dir = work_dir if work_dir is not None else state_path.with_name(state_path.name + ".work")
    clashes = _outputs_inside_input(studies_dir, state_path, report, tracking_uri, no_audit, work_dir)
    if clashes:
        raise click.UsageError(
            f"STUDIES_DIR is read-only input, but this run would write inside it: {'; '.join(clashes)}. Run from "
            "another folder, or point --state, --work-dir, --report and --tracking-uri outside it."
        )

    from ..pipeline import load_checkpoint

    resume_metadata: dict[str, Any] = {}
    if resume:  # verify the checkpoint before anything is built, locked or created
        try:
            resume_metadata = dict(load_checkpoint(state_path).get("metadata") or {})
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None

    locks: list[Any] = []
    try:
        try:
            locks.append(StateLock(state_path))
            if explicit_work_dir:  # the default one is covered by the lock of --state
                locks.append(StateLock(work_dir))
            report_file = LockedReport(report) if report is not None else None
            if report_file is not None:
                locks.append(report_file)
        except OutputBusy as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"cannot write the outputs: {exc}") from None
        _screen(studies_dir, encoder_spec, labels, reference, corpus_spec, detector, feature_source, device,
                batch_size, view, study_policy, threshold_policy, order, seed, state_path, work_dir, workers,
                checkpoint_every, resume, resume_metadata,
                cache_dir, tracking_uri, experiment, run_name, no_audit, thumbnails, as_json, report_file,
                fail_on_reject, strict, quiet, ray_config)
    finally:
        for lock in reversed(locks):
            lock.close()


def _screen(studies_dir: Path, encoder_spec: str, labels: list[str], reference: Path | None, corpus_spec: str,
            detector: str | None, feature_source: str | None, device: str, batch_size: int, view: ViewSpec,
            study_policy: str, threshold_policy: Any, order: str, seed: int, state_path: Path, work_dir: Path,
            workers: int, checkpoint_every: int, resume: bool, resume_metadata: dict[str, Any],
            cache_dir: Path | None, tracking_uri: str | None, experiment: str,
            run_name: str | None, no_audit: bool, thumbnails: bool, as_json: bool, report_file: Any,
            fail_on_reject: bool, strict: bool, quiet: bool, ray_config: Any = None) -> None:
    from ..dicom import DicomScanConfig
    from ..guard import Guard, GuardPolicy, describe_guard
    from ..pipeline import ScreenConfig, Screener
    from ..pipeline.references import load_references

    dicom_config = DicomScanConfig(view=view)
    policy = GuardPolicy(threshold=threshold_policy, study_policy=study_policy)
    screen_config = ScreenConfig(view=view, batch_size=batch_size, order=order, seed=seed,
                                 checkpoint_every=checkpoint_every, state_path=str(state_path), resume=resume,
                                 work_dir=str(work_dir), workers=workers if ray_config is None else 0)
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

    description = describe_guard(guard, entry_point="screen",
                                 reference_images=references.images if references else None, view=str(view),
                                 batch_size=batch_size, order=order, device=device)
    audit_logger = None
    if not no_audit:
        from ..integrations.mlflow import AuditConfig, AuditLogger

        try:
            audit_logger = AuditLogger(AuditConfig(tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
                                                   log_thumbnails=thumbnails))
            audit_logger.start(params=description.params, tags=description.tags,
                               resume_run_id=resume_metadata.get("run_id"), run_name=description.run_name)
            for dataset in description.datasets:
                audit_logger.log_dataset(dataset.name, dataset.digest, dataset.context, dataset.profile)
        except (ValueError, RuntimeError, OSError) as exc:
            raise click.ClickException(f"audit: {exc}") from exc

    progress_bar = None
    if not quiet:
        from tqdm import tqdm

        progress_bar = tqdm(total=0, unit="study", file=sys.stderr, desc="screening", dynamic_ncols=True)

    def on_progress(done: int, total: int) -> None:
        if progress_bar is not None:
            progress_bar.total = total
            progress_bar.n = done
            progress_bar.refresh()

    def on_batch(step: int) -> None:  # the detector's state curves: threshold, queues, churn at every batch
        audit_logger.log_state(guard.snapshot(), step=step, save_snapshot=False)

    screener_kwargs: dict[str, Any] = {}
    screener_class: Any = Screener
    if ray_config is not None:
        from ..integrations.ray import RayScreener

        screener_class, screener_kwargs = RayScreener, {"encoder_spec": encoder_spec, "ray_config": ray_config}
    screener = screener_class(guard, screen_config, dicom_config, audit_logger, on_progress,
                              checkpoint_metadata={"run_id": getattr(audit_logger, "run_id", None)},
                              on_batch=on_batch if audit_logger is not None else None, **screener_kwargs)
    run_info: dict[str, Any] = {}
    with _Signals() as signals:
        signals.attach(screener)
        try:
            result = screener.run(studies_dir)
        except BaseException as exc:
            if progress_bar is not None:
                progress_bar.close()
            if audit_logger is not None:
                audit_logger.fail(exc)
                click.echo(f"audit run {audit_logger.run_id or audit_logger.run_key} ended FAILED "
                           f"({type(exc).__name__}); its journal is released", err=True)
            if isinstance(exc, (ValueError, RuntimeError, OSError)):
                raise click.ClickException(str(exc)) from exc
            raise
    if progress_bar is not None:
        progress_bar.close()
    stopped = signals.received if result.stopped else None
    if audit_logger is not None:
        if stopped is not None:
            delivered = audit_logger.finish("KILLED", reason=signal.Signals(stopped).name)
        else:
            delivered = audit_logger.finish("FINISHED")
        tracking = audit_logger.config.resolved_tracking_uri()
        run_info = {"MLflow run": f"{audit_logger.run_id} in experiment {experiment!r} at {tracking}",
                    "open it with": "tanl-guard ui" + ("" if tracking_uri is None else f" --tracking-uri {tracking}")}
        if not delivered:
            pending = audit_logger.pending.get("records", 0)
            run_info["audit"] = f"MLflow unreachable: {pending} records kept in the local journal, sent on the next run"

    lines = result.lines()
    text = "".join(json.dumps(line) + "\n" for line in lines)
    report_error = None
    if report_file is not None:
        try:
            report_file.write(text)
        except OSError as exc:
            report_error = exc
    if as_json or report_error is not None:  # never drop computed verdicts: stdout gets them if the report failed
        click.echo(text, nl=False)
    if not as_json:
        _print_summary(result, guard, run_info, studies_dir)
    if result.found == 0:
        click.echo(f"nothing was screened: no DICOM study was found under {studies_dir}", err=True)
    if stopped is not None:
        click.echo(f"stopped by {signal.Signals(stopped).name} after {len(result.studies)} of {result.found} "
                   f"studies; checkpoint {state_path}; continue with --resume", err=True)
    if report_error is not None:
        raise click.ClickException(f"could not write the report ({report_error.strerror or report_error}); "
                                   "the verdicts went to stdout instead")
    if stopped is not None:
        sys.exit(EXIT_SIGTERM if stopped == signal.SIGTERM else EXIT_SIGINT)
    counts = result.counts()
    if fail_on_reject and counts[REJECT]:
        sys.exit(EXIT_REJECTED)
    unreadable = counts[UNREADABLE] or counts["orphan_files"] or any(
        s.verdict == UNREADABLE for v in result.studies for s in v.series) or any(v.conflicts for v in result.studies)
    if strict and unreadable:
        sys.exit(EXIT_UNREADABLE)
    if strict and result.found == 0:
        sys.exit(EXIT_NOTHING_SCREENED)
