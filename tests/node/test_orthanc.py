"""The guard between real Orthanc servers and dcmtk's storescu, in a loopback-only network namespace.

Debian's Orthanc listens on every interface and cannot be told otherwise, so the whole scenario
(``orthanc_scenario.py``: two Orthanc servers, the listener, storescu, the REST clients) runs inside
``unshare -n`` with only the loopback interface up. Skipped, saying why, without Orthanc, dcmtk or the right to
create a network namespace (root); ``.ci/run`` installs the Debian packages when it can.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.orthanc

SCENARIO = Path(__file__).with_name("orthanc_scenario.py")


def _missing() -> str | None:
    tools = {"Orthanc": "orthanc", "storescu": "dcmtk", "echoscu": "dcmtk", "unshare": "util-linux",
             "ip": "iproute2"}
    absent = [f"{tool} ({package})" for tool, package in tools.items() if shutil.which(tool) is None]
    if absent:
        return "not installed: " + ", ".join(absent) + " (apt-get install orthanc orthanc-dicomweb dcmtk)"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True)
    if probe.returncode != 0:
        return "cannot create a loopback-only network namespace here (unshare -n needs root)"
    return None


def test_orthanc_storescu_and_rest_routing_through_the_guard(demo, corpus_file, corpus_cache, tmp_path, node_salt):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, str(SCENARIO), "--work", str(work), "--studies", str(demo.studies),
               "--references", str(demo.references), "--corpus", str(corpus_file), "--cache", str(corpus_cache),
               "--salt", node_salt]
    result = subprocess.run(["unshare", "-n", "bash", "-c", f"ip link set lo up && exec {shlex.join(command)}"],
                            capture_output=True, text=True, timeout=1500)
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted((work / "logs").glob("*"))
                   ) if (work / "logs").is_dir() else ""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:] + logs
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["compressed_files"] >= 2 and summary["in_orthanc"] >= 1 and summary["quarantined"] >= 1
    assert summary["orthanc_instances"] >= summary["in_orthanc"]
    assert summary["routed_studies"] >= 1 and summary["routed_accepted"] >= 1
    print(json.dumps(summary))
