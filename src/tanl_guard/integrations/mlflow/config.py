# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Audit-logger configuration and the rules that pick the MLflow store (SQLite by default, never the file store)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = [
    "AuditConfig",
    "TRACKING_SCHEMES",
    "resolve_tracking_uri",
    "check_tracking_uri",
    "default_artifact_location",
    "default_journal_dir",
    "sqlite_path",
    "existing_store",
]

DB_NAME = "mlflow.db"
ARTIFACT_DIR_NAME = "mlartifacts"
JOURNAL_DIR_NAME = "tanl_guard_journal"
# Stores MLflow itself can open (a database, optionally with its driver as in ``postgresql+psycopg2``, or a tracking
# server); anything else fails only later, in the background, so it is refused up front.
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


@dataclass(frozen=True)
class AuditConfig:
    """Where and how the audit trail is written.

    Args:
        tracking_uri: MLflow tracking URI. ``None`` uses ``MLFLOW_TRACKING_URI`` when set, else
            ``sqlite:///<cwd>/mlflow.db``. ``file:`` URIs and bare paths (the deprecated file store) are refused.
        experiment: experiment name, created on first use.
        run_name: run name shown in the UI; ``None`` lets MLflow pick one.
        journal_dir: folder of the local JSON Lines journal. ``None``: ``tanl_guard_journal/`` next to a SQLite
            database, else in the current working folder.
        artifact_location: artifact root for a newly created experiment. ``None``: ``mlartifacts/`` next to a
            SQLite database; for a tracking server, the server decides.
        batch_size: verdict records journalled before an automatic flush to MLflow.
        flush_timeout_s: the longest a flush (or ``finish``) waits for MLflow; delivery that takes longer carries
            on in a background thread and whatever is not delivered stays pending.
        start_timeout_s: the longest ``start`` waits for the run to be created (a new SQLite store runs its
            schema migrations first, which takes seconds); the run is created later if this runs out.
        max_retries: retries of a failed delivery attempt (so ``1 + max_retries`` attempts per flush).
        retry_backoff_s: first back-off between attempts, doubled at each retry.
        backfill_on_start: deliver entries left pending by earlier runs when ``start`` is called.
        backfill_timeout_s: the longest ``backfill`` waits.
        log_thumbnails: upload PNG thumbnails of rejected studies (opt-in: burned-in annotations may carry PHI).
        auto_metrics: derive the ``screen/*``, ``gate/*`` and ``state/*`` metrics from ``log_verdicts`` and
            ``log_state``. Turn off when the caller logs those metrics itself with ``log_metrics``, so that
            each step has one value per metric.
    """

    tracking_uri: str | None = None
    experiment: str = "tanl-guard"
    run_name: str | None = None
    journal_dir: str | Path | None = None
    artifact_location: str | None = None
    batch_size: int = 64
    flush_timeout_s: float = 5.0
    start_timeout_s: float = 30.0
    max_retries: int = 2
    retry_backoff_s: float = 0.5
    backfill_on_start: bool = True
    backfill_timeout_s: float = 10.0
    log_thumbnails: bool = False
    auto_metrics: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if min(self.flush_timeout_s, self.start_timeout_s, self.backfill_timeout_s) < 0:
            raise ValueError("timeouts must be >= 0")
        if self.max_retries < 0 or self.retry_backoff_s < 0:
            raise ValueError("max_retries and retry_backoff_s must be >= 0")
        if not self.experiment:
            raise ValueError("experiment must be a non-empty name")
        if self.tracking_uri is not None:
            check_tracking_uri(self.tracking_uri)

    def resolved_tracking_uri(self) -> str:
        """The tracking URI this configuration logs to (see :func:`resolve_tracking_uri`)."""
        return resolve_tracking_uri(self.tracking_uri)

    def resolved_journal_dir(self) -> Path:
        """The journal folder this configuration writes to (see :func:`default_journal_dir`)."""
        if self.journal_dir is not None:
            return Path(self.journal_dir).expanduser().resolve()
        return default_journal_dir(self.resolved_tracking_uri())

    def resolved_artifact_location(self) -> str | None:
        """Artifact root for a new experiment, or ``None`` to let the tracking server decide."""
        if self.artifact_location is not None:
            return self.artifact_location
        return default_artifact_location(self.resolved_tracking_uri())


def check_tracking_uri(uri: str) -> str:
    """Refuse the MLflow file store and unknown schemes; return ``uri`` unchanged otherwise.

    Args:
        uri: an MLflow tracking URI.

    Raises:
        ValueError: for ``file:`` URIs and bare paths (MLflow's deprecated file store), and for schemes MLflow
            cannot open (see :data:`TRACKING_SCHEMES`).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("tracking URI must be a non-empty string")
    scheme = urlparse(uri).scheme.lower()
    # A Windows drive letter parses as a one-letter scheme: that is a bare path too.
    if scheme in ("", "file") or len(scheme) == 1:
        raise ValueError(
            f"tracking URI {uri!r} selects MLflow's file store (./mlruns), which is deprecated and refused by "
            "MLflow >= 3.13. Use a database, e.g. 'sqlite:////abs/path/mlflow.db', or a tracking server, "
            "e.g. 'http://127.0.0.1:5000'."
        )
    if scheme.split("+", 1)[0] not in TRACKING_SCHEMES:
        raise ValueError(
            f"tracking URI scheme {scheme!r} is not one MLflow can log to; use one of "
            f"{', '.join(TRACKING_SCHEMES)} (e.g. 'sqlite:////abs/path/mlflow.db' or 'http://127.0.0.1:5000')"
        )
    return uri


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI to use: the argument, else ``MLFLOW_TRACKING_URI``, else SQLite in the working folder.

    Args:
        tracking_uri: explicit URI, or ``None``.

    Raises:
        ValueError: when the chosen URI is a file store.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        return f"sqlite:///{(Path.cwd() / DB_NAME).resolve().as_posix()}"
    return check_tracking_uri(uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or ``None`` for any other URI.

    Args:
        uri: an MLflow tracking URI.
    """
    if not uri.lower().startswith("sqlite:"):
        return None
    path = unquote(uri.split(":", 1)[1])
    # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db" (SQLAlchemy's convention).
    path = path[3:] if path.startswith("///") else path.lstrip("/")
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().resolve()


def default_artifact_location(tracking_uri: str) -> str | None:
    """``file://`` URI of ``mlartifacts/`` beside a SQLite database, or ``None`` for other stores.

    Args:
        tracking_uri: the resolved tracking URI.
    """
    db = sqlite_path(tracking_uri)
    return None if db is None else (db.parent / ARTIFACT_DIR_NAME).as_uri()


def default_journal_dir(tracking_uri: str) -> Path:
    """``tanl_guard_journal/`` beside a SQLite database, else in the current working folder.

    Args:
        tracking_uri: the resolved tracking URI.
    """
    db = sqlite_path(tracking_uri)
    base = db.parent if db is not None else Path.cwd()
    return (base / JOURNAL_DIR_NAME).resolve()


def existing_store(tracking_uri: str | None = None) -> str:
    """The resolved tracking URI for reading, refusing a SQLite store that does not exist yet.

    Opening a missing SQLite file would create an empty ``mlflow.db`` (and run MLflow's migrations) just to find
    nothing in it; readers (``audit summary``, ``state show``) call this instead, so that a read never writes.

    Args:
        tracking_uri: explicit URI, or ``None`` (see :func:`resolve_tracking_uri`).

    Raises:
        LookupError: when the URI names a SQLite file that does not exist.
        ValueError: for a file store or an unknown scheme.
    """
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise LookupError(f"no MLflow store at {db}: nothing was logged there (pass --tracking-uri)")
    return uri
