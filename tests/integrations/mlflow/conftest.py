# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Fixtures for the MLflow audit tests: a real ``mlflow server`` per session, record factories, table reads."""

from __future__ import annotations

import selectors
import shutil
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tanl_guard.integrations.mlflow import serve_ui, stop_ui

SERVER_START_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path, port: int) -> tuple[Any, float]:
    """Start ``mlflow server`` on a SQLite store under ``root``; returns the process and its start-up seconds."""
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    proc = serve_ui(
        f"sqlite:///{root / 'mlflow.db'}",
        port=port,
        artifacts_destination=root / "mlartifacts",
        timeout_s=SERVER_START_TIMEOUT_S,
        log_file=root / "server.log",
    )
    return proc, time.monotonic() - t0


class TcpProxy:
    """A loopback TCP forwarder in front of the test server: ``stop()`` is an outage (connections refused and
    open ones reset), ``start()`` the recovery, without the seconds a real server restart costs."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port, self.target_port = port, target_port
        self._server: socketserver.ThreadingTCPServer | None = None
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream = socket.create_connection(("127.0.0.1", proxy.target_port), timeout=10)
                with proxy._lock:
                    proxy._socks.update((self.request, upstream))
                sel = selectors.DefaultSelector()
                sel.register(self.request, selectors.EVENT_READ, upstream)
                sel.register(upstream, selectors.EVENT_READ, self.request)
                try:
                    while True:
                        for key, _ in sel.select(timeout=1):
                            data = key.fileobj.recv(65536)
                            if not data:
                                return
                            key.data.sendall(data)
                except OSError:
                    return
                finally:
                    sel.close()
                    upstream.close()

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            for sock in self._socks:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._socks.clear()


@pytest.fixture
def outage_proxy(mlflow_server: dict[str, Any]) -> Iterator[TcpProxy]:
    """A stopped :class:`TcpProxy` on a free port in front of the session server (MLflow "down" until started)."""
    proxy = TcpProxy(free_port(), mlflow_server["port"])
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def _mlflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # No ambient tracking URI; MLflow's own HTTP retries off so an unreachable server fails fast.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    yield


class LiveServer(dict):
    """The session's ``mlflow server``: a dict (``uri``, ``port``, ``root``, ``startup_s``) that can also be
    stopped (SIGTERM) and started again on the same port and store, for outage tests."""

    def start(self) -> None:
        self.proc, self["startup_s"] = start_server(self["root"], self["port"])

    def stop(self) -> None:
        stop_ui(self.proc, timeout_s=15)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real ``mlflow server`` on 127.0.0.1 for the whole session (``--workers 1``, no job runner)."""
    port = free_port()
    server = LiveServer(uri=f"http://127.0.0.1:{port}", port=port, root=tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store with MLflow's schema migrations applied once; copying it saves seconds per test."""
    import mlflow

    db = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def sqlite_uri(tmp_path: Path, migrated_db: Path) -> str:
    """``sqlite:///<tmp_path>/mlflow.db``, a copy of the pre-migrated store."""
    shutil.copyfile(migrated_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def make_records() -> Callable[..., list[dict[str, Any]]]:
    """Factory of study records in the ``screen --json`` format: verdicts cycle accept/reject/unreadable."""

    def make(n: int, start: int = 0, threshold: float = 0.4) -> list[dict[str, Any]]:
        out = []
        for i in range(start, start + n):
            verdict = ("accept", "reject", "unreadable")[i % 3]
            score = None if verdict == "unreadable" else (0.8 if verdict == "accept" else 0.1)
            out.append(
                {
                    "study": f"st{i:04d}",
                    "verdict": verdict,
                    "id_score": score,
                    "threshold": threshold,
                    "series": [
                        {
                            "series": f"se{i:04d}a",
                            "modality": "CR",
                            "verdict": verdict,
                            "id_score": score,
                            "views": 1,
                            "reason": "no pixel data" if score is None else None,
                        }
                    ],
                    "top_negatives": ["bicycle", "teapot"],
                    "reason": "no pixel data" if score is None else None,
                }
            )
        return out

    return make


@pytest.fixture
def load_table() -> Iterator[Callable[[str, str, str], Any]]:
    """``mlflow.load_table`` of a run's ``audit/verdicts.json`` (it searches the active experiment only)."""
    import mlflow

    def load(uri: str, run_id: str, experiment: str = "tanl-guard") -> Any:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        return mlflow.load_table("audit/verdicts.json", run_ids=[run_id], extra_columns=["run_id"])

    yield load
    mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI, which set_tracking_uri exported
