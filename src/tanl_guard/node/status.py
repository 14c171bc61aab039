# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A small read-only HTTP status endpoint for operators, on 127.0.0.1 by default.

``GET /status``: the listener's :meth:`~tanl_guard.node.Listener.status` as JSON (health, counts, threshold,
queue sizes, leading negatives, spool and outboxes); ``GET /health``: ``200 ok`` or ``503`` with the problem.
Nothing can be changed through it, and it holds salted keys and counts only.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..integrations.mlflow.snapshot import to_json_safe

__all__ = ["StatusServer"]


class StatusServer:
    """Serves a listener's status over HTTP in a background thread.

    Args:
        listener: anything with a ``status()`` method returning a JSON-safe mapping.
        host: the address to bind (``127.0.0.1``: only this machine).
        port: the port (0: any free port, see :attr:`port`).
    """

    def __init__(self, listener: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listener = listener
        self.host = host
        self.requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it serves on."""
        return self._server.server_address[1] if self._server is not None else self.requested_port

    def start(self) -> StatusServer:
        """Start serving."""
        listener = self.listener

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                path = self.path.split("?", 1)[0].rstrip("/")
                if path not in ("/status", "/health"):
                    self._send(404, {"error": "not found: GET /status or /health"})
                    return
                try:
                    status = to_json_safe(listener.status())
                except Exception as exc:  # the endpoint must never take the listener down
                    self._send(500, {"ok": False, "error": type(exc).__name__})
                    return
                if path == "/health":
                    ok = bool(status.get("ok"))
                    self._send(200 if ok else 503, {"ok": ok, **({} if ok else {"health": status.get("health")})})
                else:
                    self._send(200, status)

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, sort_keys=True).encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log on stderr
                return None

        self._server = ThreadingHTTPServer((self.host, self.requested_port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="tanl-guard-status", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
