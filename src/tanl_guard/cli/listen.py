# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard listen``: the guard as a DICOM node between the PACS and the AI node."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from .screen import _read_labels, _Signals, screen

__all__ = ["listen"]

_EXAMPLES = """
\b
Examples:
  # a node between the PACS and the AI node: accepted studies go on, the others to a quarantine folder
  tanl-guard listen --port 11112 --spool /var/spool/tanl-guard --state /var/lib/tanl-guard/state.pt \\
      --forward AINODE@10.0.0.5:104 --quarantine-dir /var/lib/tanl-guard/quarantine \\
      --encoder biomedclip:local-dir:/models/biomedclip --id-label "brain MRI" --reference /data/reference_brain_mr
  # offline demo encoder, no audit run, a status endpoint on 127.0.0.1:9042
  tanl-guard listen --port 11112 --spool spool --state state.pt --forward AI@127.0.0.1:4242 \\
      --encoder surrogate --id-label "chest X-ray" --no-audit --status-port 9042

\b
SIGTERM or Ctrl-C: the batch in hand is judged, checkpointed and routed, then the listener exits 0; a restart
with the same --spool and --state continues where it stopped (same detector state, pending studies judged and
delivered). Exit codes: 0 stopped; 1 runtime error (bad checkpoint, busy --state or --spool, port in use, ...);
2 usage error.
"""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*$")


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int:
    if value is None:
        return 0
    match = _SIZE.match(value)
    if not match:
        raise click.BadParameter(f"a size such as 500M or 20G, got {value!r}")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024**power)


def _peer(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from ..node import Peer

    if value is None:
        return None
    try:
        return Peer.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(epilog=_EXAMPLES)
@click.option("--port", type=click.IntRange(0, 65535), default=11112, show_default=True,
              help="DICOM port (0: any free).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; give 0.0.0.0 or the node's address to receive from the network.")
@click.option("--ae-title", default="TANLGUARD", show_default=True, help="This node's AE title.")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Private folder (0700) of received studies until they are judged and delivered.")
@click.option("--forward", callback=_peer, required=True, help="AE@HOST:PORT that receives the accepted studies.")
@click.option("--quarantine", callback=_peer, help="AE@HOST:PORT that receives rejected and unreadable studies.")
@click.option("--quarantine-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that receives rejected and unreadable studies (instead of --quarantine). With neither, "
                   "they are dropped once their verdict is journaled.")
@click.option("--study-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="A study is complete when nothing new arrived for it for this many seconds.")
@click.option("--batch-wait", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Once a study is complete, wait this long for others to gate with it.")
@click.option("--max-spool", callback=_size, help="Size cap of the spool (e.g. 20G); beyond it instances are refused "
                                                    "with an out-of-resources status.")
@click.option("--json-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Append one line per judged study here, the schema of `screen --json`.")
@click.option("--status-port", type=click.IntRange(0, 65535), default=None,
              help="Serve a read-only JSON status on http://127.0.0.1:PORT/status (off by default).")
@click.option("--retry-backoff", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="First delay before a failed delivery is retried (doubled per failure, up to 60 s).")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("tanl_guard_listener.pt"), show_default=True,
              help="Checkpoint (detector state, batch in hand), signed; a restart continues from it.")
@click.option("--run-name", default=None, help="Name of the audit run (one run per listener, continued on restart).")
def listen(port: int, host: str, ae_title: str, spool: Path, forward: Any, quarantine: Any,
           quarantine_dir: Path | None, study_timeout: float, batch_wait: float, max_spool: int,
           json_log: Path | None, status_port: int | None, retry_backoff: float, encoder_spec: str,
           id_label: tuple[str, ...], id_labels: Path | None, reference: Path | None, corpus_spec: str,
           detector: str, device: str, batch_size: int, view: str, study_policy: str, threshold_policy: Any,
           seed: int, state_path: Path, cache_dir: Path | None, tracking_uri: str | None, experiment: str,
           run_name: str | None, no_audit: bool, thumbnails: bool, quiet: bool) -> None:
    """Receive studies by DICOM C-STORE, gate each complete study, forward the accepted ones.

    Rejected and unreadable studies go to the quarantine. Every verdict is journaled (--json-log, MLflow).
    """
    from ..node import ListenConfig
    from ._files import OutputBusy, StateLock

    labels = _read_labels(id_label, id_labels)
    if not labels and reference is None:
        raise click.UsageError("give the in-distribution labels (--id-label/--id-labels) and/or --reference images")
    if quarantine is not None and quarantine_dir is not None:
        raise click.UsageError("give --quarantine or --quarantine-dir, not both")
    config = ListenConfig(spool=str(spool), state_path=str(state_path), forward=forward, quarantine=quarantine,
                          quarantine_dir=str(quarantine_dir) if quarantine_dir else None, host=host, port=port,
                          ae_title=ae_title, study_timeout_s=study_timeout, batch_wait_s=batch_wait,
                          batch_size=batch_size, view=view, seed=seed, max_spool_bytes=max_spool,
                          json_log=str(json_log) if json_log else None, retry_backoff_s=retry_backoff)
    locks: list[Any] = []
    try:
        try:
            locks.append(StateLock(state_path))
            spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            locks.append(StateLock(spool / "listener"))
        except OutputBusy as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"cannot write the state or the spool: {exc}") from None
        _listen(config, encoder_spec, labels, reference, corpus_spec, detector, device, study_policy,
                threshold_policy, cache_dir, tracking_uri, experiment, run_name, no_audit, thumbnails, status_port,
                quiet)
    finally:
        for lock in reversed(locks):
            lock.close()


# The screening options are `screen`'s own (the same objects): one definition, one meaning, one help text.
for _name in ("encoder_spec", "id_label", "id_labels", "reference", "corpus_spec", "detector", "device", "batch_size",
              "view", "study_policy", "threshold_policy", "seed", "cache_dir", "tracking_uri", "experiment",
              "no_audit", "thumbnails", "quiet"):
    listen.params.append(next(p for p in screen.params if p.name == _name))


def _listen(config: Any, encoder_spec: str, labels: list[str], reference: Path | None, corpus_spec: str,
            detector: str, device: str, study_policy: str, threshold_policy: Any, cache_dir: Path | None,
            tracking_uri: str | None, experiment: str, run_name: str | None, no_audit: bool, thumbnails: bool,
            status_port: int | None, quiet: bool) -> None:
    from ..dicom import DicomScanConfig
    from ..guard import Guard, GuardPolicy, describe_guard
    from ..node import Listener
    from ..pipeline import load_checkpoint
    from ..pipeline.references import load_reference_images

    resume_run_id = None
    if Path(config.state_path).exists():  # verify it before anything is built or started
        try:
            resume_run_id = (load_checkpoint(config.state_path).get("metadata") or {}).get("run_id")
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
    dicom_config = DicomScanConfig(view=config.view)
    try:
        references = load_reference_images(reference, labels, config.view, dicom_config) if reference else None
        if not quiet:
            click.echo(f"tanl-guard {__version__}: loading encoder {encoder_spec!r} and corpus {corpus_spec!r}",
                       err=True)
        policy = GuardPolicy(threshold=threshold_policy, study_policy=study_policy)
        guard = Guard.build(encoder=encoder_spec, labels=labels, reference_images=references, corpus=corpus_spec,
                            detector=detector, policy=policy,
                            device=device, cache_dir=str(cache_dir) if cache_dir else None, progress=not quiet,
                            seed=config.seed)
    except (ValueError, RuntimeError, ImportError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    audit_logger = None
    if not no_audit:
        from ..integrations.mlflow import AuditConfig, AuditLogger

        description = describe_guard(guard, entry_point="listener", reference_images=references, view=config.view,
                                     batch_size=config.batch_size, order="shuffled", device=device,
                                     study_timeout_s=config.study_timeout_s, batch_wait_s=config.batch_wait_s)
        try:
            audit_logger = AuditLogger(AuditConfig(tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
                                                   log_thumbnails=thumbnails))
            audit_logger.start(params=description.params, tags=description.tags, resume_run_id=resume_run_id,
                               run_name=description.run_name)
            if resume_run_id is None:
                for dataset in description.datasets:
                    audit_logger.log_dataset(dataset.name, dataset.digest, dataset.context, dataset.profile)
        except (ValueError, RuntimeError, OSError) as exc:
            raise click.ClickException(f"audit: {exc}") from exc

    listener = Listener(guard, config, audit=audit_logger, dicom_config=dicom_config)
    status_server = None
    with _Signals() as signals:
        signals.attach(listener)
        try:
            listener.start()
            if status_port is not None:
                from ..node import StatusServer

                status_server = StatusServer(listener, port=status_port).start()
            if not quiet:
                click.echo(f"listening as {config.ae_title} on {config.host}:{listener.scp.port}"
                           + (f"; status on http://127.0.0.1:{status_server.port}/status" if status_server else ""),
                           err=True)
            counts = listener.run()
        except BaseException as exc:
            listener.close()
            if audit_logger is not None:
                audit_logger.fail(exc)
            if isinstance(exc, (ValueError, RuntimeError, OSError)):
                raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
            raise
        finally:
            if status_server is not None:
                status_server.stop()
    if audit_logger is not None:
        import signal

        reason = signal.Signals(signals.received).name if signals.received else None
        audit_logger.finish("FINISHED", reason=reason)
    if not quiet:
        click.echo(f"stopped after {listener.step} judged studies ({', '.join(f'{v} {k}' for k, v in counts.items())});"
                   f" checkpoint {config.state_path}", err=True)
    sys.exit(0)
