# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard listen`` as a real subprocess for the kill/restart and Orthanc tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import tanl_guard

__all__ = ["free_port", "listener_env", "start_listener", "wait_until", "judged_lines", "spool_is_idle"]

SRC = str(Path(tanl_guard.__file__).resolve().parents[1])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listener_env(salt: str) -> dict[str, str]:
    """The environment of a listener subprocess: this checkout's code, the tests' salt and home folders."""
    env = dict(os.environ)
    env.update(PYTHONPATH=SRC + os.pathsep + env.get("PYTHONPATH", ""), TANL_GUARD_SALT=salt, HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    return env


def start_listener(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``tanl-guard listen ARGS`` with stdout and stderr appended to ``log``."""
    handle = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "tanl_guard.cli.main", "-v", "listen", *args], env=env,
                                stdout=handle, stderr=subprocess.STDOUT)
    finally:
        handle.close()


def wait_until(condition, timeout_s: float, what: str, process: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` (with the listener's log tail) otherwise."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    state = f" (listener exited {process.returncode})" if process is not None and process.poll() is not None else ""
    raise AssertionError(f"timed out waiting for {what}{state}\n{tail}")


def judged_lines(json_log: Path) -> list[dict]:
    """The study lines of a listener's JSON log."""
    if not json_log.exists():
        return []
    return [line for line in map(json.loads, json_log.read_text().splitlines()) if line.get("study")]


def spool_is_idle(spool: Path) -> bool:
    """Nothing received, judging or waiting for delivery in the spool."""
    return not any(p.is_file() for sub in ("incoming", "batches", "outbox") for p in (spool / sub).rglob("*"))
