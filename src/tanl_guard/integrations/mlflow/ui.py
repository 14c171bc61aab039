# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Launching the MLflow UI (``mlflow server``) on the audit store, bound to 127.0.0.1 by default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tanl_guard._offline import TELEMETRY_OFF

from .config import ARTIFACT_DIR_NAME, resolve_tracking_uri, sqlite_path

__all__ = ["serve_ui", "run_ui", "stop_ui", "wait_for_health"]


def wait_for_health(url: str, timeout_s: float = 60.0, process: subprocess.Popen | None = None) -> float:
    """Poll ``<url>/health`` until it answers 200.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:5000``.
        timeout_s: the longest to wait.
        process: the server process; waiting stops early if it exits.

    Returns:
        Seconds waited.

    Raises:
        TimeoutError: when the server did not answer in time.
        RuntimeError: when ``process`` exited first.
    """
    t0 = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"mlflow server at {url} did not answer /health within {timeout_s:.0f} s")
        time.sleep(0.2)


def serve_ui(
    store_uri: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    artifacts_destination: str | Path | None = None,
    wait: bool = True,
    timeout_s: float = 60.0,
    log_file: str | Path | None = None,
) -> subprocess.Popen:
    """Start ``mlflow server`` on the audit store in the background and return its process.

    Runs ``python -m mlflow server --backend-store-uri <store> --artifacts-destination <dir> --host <host>
    --port <port> --workers <n>`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (no job-runner processes;
    starts in ~5 s instead of ~13 s). Stop it with :func:`stop_ui`.

    Args:
        store_uri: the database (default: ``MLFLOW_TRACKING_URI`` if it is a database, else
            ``sqlite:///<cwd>/mlflow.db``); tracking-server URIs and the file store are refused.
        host: interface to bind; keep 127.0.0.1 unless the UI must be reachable from other machines.
        port: TCP port.
        workers: uvicorn worker processes.
        artifacts_destination: where proxied artifacts go (default: ``mlartifacts/`` beside the SQLite file).
        wait: block until ``/health`` answers.
        timeout_s: the longest to wait.
        log_file: file for the server's output (default: discarded).
    """
    uri = resolve_tracking_uri(store_uri)
    if uri.split(":", 1)[0].lower() in ("http", "https", "databricks"):
        raise ValueError(f"serve_ui needs a database store URI (e.g. sqlite:///...), got {uri!r}")
    if artifacts_destination is None:
        db = sqlite_path(uri)
        artifacts_destination = (db.parent if db is not None else Path.cwd()) / ARTIFACT_DIR_NAME
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--artifacts-destination", str(artifacts_destination),
        "--host", host,
        "--port", str(int(port)),
        "--workers", str(int(workers)),
    ]  # fmt: skip
    env = dict(os.environ, **TELEMETRY_OFF)  # the server and its UI send no usage telemetry either
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    out = open(log_file, "ab") if log_file is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log_file is not None:
            out.close()
    if wait:
        probe = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        try:
            wait_for_health(f"http://{probe}:{port}", timeout_s, proc)
        except BaseException:
            stop_ui(proc)
            raise
    return proc


def stop_ui(process: subprocess.Popen, timeout_s: float = 10.0) -> int | None:
    """Stop a server started by :func:`serve_ui`: SIGTERM (which stops its workers), then SIGKILL if needed.

    Args:
        process: the server process.
        timeout_s: the longest to wait after SIGTERM.

    Returns:
        The exit code.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            # The server is its own session leader (start_new_session): kill the whole group.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, AttributeError):
                process.kill()
            process.wait(timeout_s)
    return process.returncode


def run_ui(
    store_uri: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    artifacts_destination: str | Path | None = None,
) -> int:
    """Run the MLflow UI in the foreground until it exits or Ctrl-C, e.g. for ``tanl-guard audit ui``.

    Args:
        store_uri: the database (see :func:`serve_ui`).
        host: interface to bind (127.0.0.1 by default).
        port: TCP port.
        workers: uvicorn worker processes.
        artifacts_destination: where proxied artifacts go.

    Returns:
        The server's exit code.
    """
    proc = serve_ui(store_uri, host, port, workers, artifacts_destination, wait=False)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return stop_ui(proc) or 0
