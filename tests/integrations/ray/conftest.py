# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""One Ray cluster for the Ray tests, started once, inside a loopback-only network namespace.

Ray listens on every interface and replaces 127.0.0.1 by the machine's address, so the head node runs in a network
namespace of its own (``unshare -n``: only ``lo``, nothing else reachable in or out) and every ``tanl-guard``
process of the tests joins that namespace (``nsenter``). Its CPUs are few (2) and the stages reserve fractions of
them: a stage that cannot get a CPU hangs silently, so every test here also has a timeout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")

PORT = 6379  # inside the namespace nothing else listens
START_TIMEOUT_S = 180.0
CORPUS = "teapot\ncat\ndog\nbicycle\ncar\nmountain\nbeach\nguitar\nbook\nbottle\nchest radiograph\nultrasound scan\n"
SALT = "ray-tests"


@dataclass(frozen=True)
class RayCluster:
    """A running head node: its address inside the namespace and the command prefix that enters it."""

    address: str
    enter: tuple[str, ...]
    env: dict[str, str]
    head: subprocess.Popen

    def run(self, args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """Run ``tanl-guard ARGS`` inside the namespace, as a separate process, and wait for it."""
        return subprocess.run([*self.enter, sys.executable, "-m", "tanl_guard.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, **kwargs)

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Start ``tanl-guard ARGS`` inside the namespace without waiting."""
        return subprocess.Popen([*self.enter, sys.executable, "-m", "tanl_guard.cli.main", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)

    def processes(self) -> dict[int, str]:
        """The processes of the cluster (descendants of the head), with their command lines."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                children.setdefault(int(fields[1]), []).append(int(entry))
        found, todo = {}, [self.head.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                todo.append(child)
        return found


_prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl  # resolved before any fork


def _die_with_the_tests() -> None:
    """In the head's process before exec: SIGTERM it when the test process dies, even by SIGKILL (which skips the
    fixture's teardown), so that a cluster never outlives the run. ``unshare`` and ``bash -c exec`` replace the
    process without forking, and the setting survives ``execve``."""
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _namespace_commands() -> tuple[list[str], str] | None:
    """How to make a loopback-only namespace here (root: ``unshare -n``; else a user namespace), or None."""
    for unshare, mode in ((["unshare", "-n"], "root"), (["unshare", "-r", "-n"], "user")):
        try:
            ok = subprocess.run([*unshare, "true"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return unshare, mode
    return None


@pytest.fixture(scope="session")
def ray_env() -> Iterator[dict[str, str]]:
    """The environment of every process of the Ray tests (the cluster's and the screens')."""
    cache = tempfile.mkdtemp(prefix="tgray_cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",  # no one outside the namespace can reach it
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # a test cluster serves nothing: stop at once, not after 30 s
               TANL_GUARD_SALT=SALT, TANL_GUARD_CACHE=cache, HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).parents[3] / "src"),
                                                       env.get("PYTHONPATH", "")) if p))
    yield env
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(ray_env) -> Iterator[RayCluster]:
    namespace = _namespace_commands()
    if namespace is None or shutil.which("nsenter") is None or shutil.which("ip") is None:
        pytest.skip("a loopback-only network namespace is needed for a Ray cluster in tests (unshare, nsenter, ip)")
    unshare, mode = namespace
    temp = tempfile.mkdtemp(prefix="tgray")  # short: Ray's socket paths live under it
    env = ray_env
    ray_bin = str(Path(sys.executable).with_name("ray"))
    start = (f"ip link set lo up && exec {ray_bin} start --head --block --port {PORT} --num-cpus 2 --num-gpus 0 "
             f"--node-ip-address 127.0.0.1 --include-dashboard false --disable-usage-stats --temp-dir {temp}")
    head = subprocess.Popen([*unshare, "bash", "-c", start], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_die_with_the_tests)
    deadline, log = time.monotonic() + START_TIMEOUT_S, []
    while time.monotonic() < deadline:
        line = head.stdout.readline()
        if not line and head.poll() is not None:
            break
        log.append(line)
        if "Ray runtime started" in line:
            break
    else:
        line = ""
    if "Ray runtime started" not in line:
        head.kill()
        pytest.fail("the Ray head did not start:\n" + "".join(log[-30:]))
    ns = f"/proc/{head.pid}/ns"
    enter = ("nsenter", f"--net={ns}/net") if mode == "root" else (
        "nsenter", "--preserve-credentials", f"--user={ns}/user", f"--net={ns}/net")
    cluster = RayCluster(address=f"127.0.0.1:{PORT}", enter=enter, env=env, head=head)
    try:
        yield cluster
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the cluster's processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_demo(tmp_path_factory):
    """The demo folder (real packaged studies), a small corpus, and the common arguments of a screening."""
    old = os.environ.get("TANL_GUARD_SALT")
    os.environ["TANL_GUARD_SALT"] = SALT
    try:
        from tanl_guard.demo import build_demo_folder

        root = tmp_path_factory.mktemp("ray_demo")
        demo = build_demo_folder(root)
    finally:
        if old is None:
            os.environ.pop("TANL_GUARD_SALT", None)
        else:
            os.environ["TANL_GUARD_SALT"] = old
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS)
    args = [str(demo.studies), "--encoder", "surrogate", "--id-label", "brain MRI", "--reference",
            str(demo.references), "--corpus", str(corpus),  # the default fused gate: trunk features in the shards
            "--batch-size", "4", "--no-audit", "--json", "-q"]
    return demo, args
