# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The guard between real DICOM nodes: storescu -> guard -> Orthanc, and Orthanc -> guard -> Orthanc.

Run by ``test_orthanc.py`` inside a loopback-only network namespace (``unshare -n``, then ``ip link set lo up``):
Debian's Orthanc listens on every interface, so this script refuses to start it where any other interface
exists. Everything (two Orthanc servers, the listener, storescu, the REST clients) runs in that namespace.

Scenario 1: the demo studies (compressed ones among them) are sent with storescu to the listener, which is
SIGKILLed while a second storescu is mid-stream and restarted; accepted studies must arrive whole in the AI node
(Orthanc, checked through its REST API: study count and the instance count of each), rejected and unreadable
ones in the quarantine folder, their sum equal to what the listener acknowledged, nothing lost or doubled.
Scenario 2: the studies are uploaded to a source Orthanc (the PACS), whose ``OnStableStudy`` Lua hook routes each
stable study to the guard through its REST route ``POST /modalities/guard/store``, as the Orthanc Book's
auto-routing example does; the verdicts are written back
onto the PACS's studies as user metadata. Prints one JSON summary line; exits 1 on the first failed check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from listener_process import judged_lines, listener_env, spool_is_idle, start_listener, wait_until  # noqa: E402

GUARD_PORT, AI_HTTP, AI_DICOM, PACS_HTTP, PACS_DICOM = 11112, 18042, 14242, 18043, 14243
STARTUP_S = 300
# storescu proposes uncompressed syntaxes unless told otherwise: one run per transfer syntax, with its flag.
STORESCU_FLAGS = {
    "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
}


def check(condition: bool, message: str) -> None:
    if not condition:
        print(f"CHECK FAILED: {message}", file=sys.stderr, flush=True)
        sys.exit(1)


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]  # this process's network namespace


# ---------------------------------------------------------------------------------------------- Orthanc
# The PACS routes every stable study to the guard through its own REST route (docs/deploy.md shows the same).
ROUTE_LUA = """
function OnStableStudy(studyId, tags, metadata)
  RestApiPost('/modalities/guard/store', studyId)
end
"""


def orthanc_config(work: Path, name: str, http: int, dicom: int, route: bool = False) -> Path:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": name, "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http, "DicomPort": dicom, "DicomAet": name, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [], "StableAge": 2, "ConcurrentJobs": 2,
        "DicomModalities": {"guard": ["TANLGUARD", "127.0.0.1", GUARD_PORT]},
        "UserMetadata": {"TanlVerdict": 1024},
    }
    if route:
        (folder / "route.lua").write_text(ROUTE_LUA)
        config["LuaScripts"] = [str(folder / "route.lua")]
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def start_orthanc(config: Path, log: Path) -> subprocess.Popen:
    check(only_loopback(), "refusing to start Orthanc outside a loopback-only network namespace")
    with open(log, "ab") as handle:
        return subprocess.Popen(["Orthanc", str(config)], stdout=handle, stderr=subprocess.STDOUT)


def rest(port: int, path: str, method: str = "GET", body: bytes | None = None) -> object:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=120) as response:
        data = response.read()
    return json.loads(data) if data[:1] in (b"{", b"[") else data.decode()


def orthanc_up(port: int) -> bool:
    try:
        rest(port, "/system")
        return True
    except OSError:
        return False


def orthanc_studies(port: int) -> dict[str, int]:
    """Study Instance UID -> instance count, through the REST API."""
    out = {}
    for study in rest(port, "/studies"):
        tags = rest(port, f"/studies/{study}")["MainDicomTags"]
        out[tags["StudyInstanceUID"]] = len(rest(port, f"/studies/{study}/instances"))
    return out


# ---------------------------------------------------------------------------------------------- DICOM files
def instance_of(path: Path) -> tuple[str, str]:
    from pydicom import dcmread

    ds = dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


def storescu(files: list[Path], log: Path, wait: bool = True) -> list[subprocess.Popen]:
    """Send files with dcmtk's storescu, one run per transfer syntax; acknowledged files are renamed *.done."""
    from pydicom.filereader import read_file_meta_info

    groups: dict[str, list[str]] = defaultdict(list)
    for path in files:
        groups[STORESCU_FLAGS.get(str(read_file_meta_info(path).TransferSyntaxUID), "-x=")].append(str(path))
    runs = []
    with open(log, "ab") as handle:
        for flag, names in sorted(groups.items()):
            command = ["storescu", "-nh", "-R", flag, "+rn", "-aet", "SENDER", "-aec", "TANLGUARD", "127.0.0.1",
                       str(GUARD_PORT), *names]
            runs.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT))
            if wait:
                runs[-1].wait(300)
    return runs


def sendable(folder: Path) -> list[Path]:
    """Files that storescu can send: DICOM files whose meta names an SOP class, an instance and a transfer syntax."""
    from pydicom import dcmread
    from pydicom.filereader import read_file_meta_info

    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            meta = read_file_meta_info(path)
            dcmread(path)  # complete: storescu skips truncated files
        except Exception:
            continue
        if all(k in meta for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")):
            out.append(path)
    return out


def placed(quarantine: Path) -> dict[str, set[str]]:
    """Study UID -> SOP instance UIDs in the quarantine folder."""
    out: dict[str, set[str]] = defaultdict(set)
    if quarantine.is_dir():
        for path in quarantine.rglob("*.dcm"):
            study, sop = instance_of(path)
            out[study].add(sop)
    return out


# ---------------------------------------------------------------------------------------------- scenarios
def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("work", "studies", "references", "corpus", "cache", "salt"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    check(only_loopback(), "not in a loopback-only network namespace (run me with unshare -n)")
    work = Path(args.work)
    from pydicom.filereader import read_file_meta_info

    from tanl_guard.privacy import Hasher

    study_key = Hasher(args.salt)
    send = work / "send"
    shutil.copytree(args.studies, send)
    files = sendable(send)
    compressed = [p for p in files if str(read_file_meta_info(p).TransferSyntaxUID) in STORESCU_FLAGS]
    check(len(compressed) >= 2, "the demo studies include compressed ones")
    by_study: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        by_study[instance_of(path)[0]].append(path)
    studies = [by_study[k] for k in sorted(by_study)]

    logs = work / "logs"
    logs.mkdir()
    orthancs = {"AINODE": start_orthanc(orthanc_config(work, "AINODE", AI_HTTP, AI_DICOM), logs / "ainode.log"),
                "PACS": start_orthanc(orthanc_config(work, "PACS", PACS_HTTP, PACS_DICOM, route=True),
                                      logs / "pacs.log")}
    spool, state, quarantine, json_log = (work / n for n in ("spool", "state.pt", "quarantine", "verdicts.jsonl"))
    listener_args = [
        "--port", str(GUARD_PORT), "--spool", str(spool), "--state", str(state),
        "--forward", f"AINODE@127.0.0.1:{AI_DICOM}", "--quarantine-dir", str(quarantine), "--json-log", str(json_log),
        "--study-timeout", "1", "--batch-wait", "0.3", "--retry-backoff", "0.2", "--batch-size", "8",
        "--encoder", "surrogate", "--id-label", "brain MRI", "--reference", args.references,
        "--corpus", args.corpus, "--cache-dir", args.cache, "--no-audit", "--quiet", "--status-port", "18080",
    ]
    env = listener_env(args.salt)
    listener_log = logs / "listener.log"
    summary: dict[str, object] = {"sendable_files": len(files), "compressed_files": len(compressed)}
    listener = None
    try:
        wait_until(lambda: orthanc_up(AI_HTTP) and orthanc_up(PACS_HTTP), 60, "Orthanc")
        listener = start_listener(listener_args, env, listener_log)

        def echo_ok() -> bool:
            return subprocess.run(["echoscu", "-aec", "TANLGUARD", "127.0.0.1", str(GUARD_PORT)],
                                  capture_output=True).returncode == 0

        wait_until(echo_ok, STARTUP_S, "the listener", listener, listener_log)

        # ---- scenario 1: storescu -> guard -> Orthanc, SIGKILL mid-stream, restart
        half = len(studies) // 2
        storescu([p for s in studies[:half] for p in s], logs / "storescu.log")
        wait_until(lambda: judged_lines(json_log), 120, "a first judged batch", listener, listener_log)
        second = [p for s in studies[half:] for p in s]
        runs = storescu(second, logs / "storescu.log", wait=False)
        time.sleep(0.5)
        listener.send_signal(signal.SIGKILL)
        listener.wait(30)
        for run in runs:
            run.wait(120)
        killed_after = len(list(send.rglob("*.done")))
        listener = start_listener(listener_args, env, listener_log)
        wait_until(echo_ok, STARTUP_S, "the restarted listener", listener, listener_log)
        retry = []
        for path in send.rglob("*.bad"):  # a sender retries what was not acknowledged
            original = path.with_suffix("")
            path.rename(original)
            retry.append(original)
        unsent = [p for p in second if p.exists()]
        storescu(sorted(set(retry) | set(unsent)), logs / "storescu.log")
        acknowledged: dict[str, set[str]] = defaultdict(set)
        for path in send.rglob("*.done"):
            study, sop = instance_of(path)
            acknowledged[study].add(sop)
        keys = {study_key("study", s): s for s in acknowledged}
        wait_until(lambda: {x["study"] for x in judged_lines(json_log)} >= set(keys) and spool_is_idle(spool),
                   240, "every study judged and delivered", listener, listener_log)
        status = json.loads(urllib.request.urlopen("http://127.0.0.1:18080/status", timeout=30).read())
        in_orthanc = orthanc_studies(AI_HTTP)
        in_quarantine = placed(quarantine)
        verdicts = defaultdict(set)
        for line in judged_lines(json_log):
            verdicts[keys[line["study"]]].add(line["verdict"])
        accepted = {s for s, v in verdicts.items() if v == {"accept"}}
        check(set(in_orthanc) == accepted, f"accepted studies in Orthanc: {len(in_orthanc)} vs {len(accepted)}")
        for study, count in in_orthanc.items():
            check(count == len(acknowledged[study]), "every instance of an accepted study is in Orthanc")
        check(not set(in_orthanc) & set(in_quarantine), "no study both forwarded and quarantined")
        check(sum(in_orthanc.values()) + sum(len(v) for v in in_quarantine.values())
              == sum(len(v) for v in acknowledged.values()), "forwarded + quarantined = acknowledged")
        check(all(in_quarantine[s] == acknowledged[s] for s in in_quarantine), "quarantined studies are whole")
        lines = judged_lines(json_log)
        check(len(lines) - len({x["study"] for x in lines}) <= 1, "each study judged once (the cut one in two parts)")
        check(status["studies_judged"] >= len(lines) - killed_after and status["ok"], "status endpoint")
        summary.update(acknowledged_instances=sum(len(v) for v in acknowledged.values()), studies=len(acknowledged),
                       in_orthanc=len(in_orthanc), orthanc_instances=sum(in_orthanc.values()),
                       quarantined=len(in_quarantine), acknowledged_before_kill=killed_after)

        # ---- scenario 2: Orthanc (PACS) -> guard -> Orthanc (AI node): each stable study is routed by the PACS's
        # Lua hook through its REST route POST /modalities/guard/store
        for study in rest(AI_HTTP, "/studies"):
            rest(AI_HTTP, f"/studies/{study}", "DELETE")
        shutil.rmtree(quarantine, ignore_errors=True)
        offset = len(judged_lines(json_log))
        for path in sorted(send.rglob("*.done")):
            rest(PACS_HTTP, "/instances", "POST", path.read_bytes())
        pacs_ids = rest(PACS_HTTP, "/studies")
        pacs = {rest(PACS_HTTP, f"/studies/{i}")["MainDicomTags"]["StudyInstanceUID"]: i for i in pacs_ids}
        wanted = {study_key("study", s) for s in pacs}
        wait_until(lambda: {x["study"] for x in judged_lines(json_log)[offset:]} >= wanted and spool_is_idle(spool),
                   240, "the routed studies judged and delivered", listener, listener_log)
        routed = {keys.get(x["study"]) or x["study"]: x["verdict"] for x in judged_lines(json_log)[offset:]}
        in_orthanc = orthanc_studies(AI_HTTP)
        in_quarantine = placed(quarantine)
        pacs_counts = orthanc_studies(PACS_HTTP)
        check(set(in_orthanc) == {s for s in pacs if routed[s] == "accept"}, "routed accepted studies arrived")
        check(all(in_orthanc[s] == pacs_counts[s] for s in in_orthanc), "whole routed studies in the AI node")
        check(set(in_quarantine) | set(in_orthanc) == set(pacs), "every routed study forwarded or quarantined")
        for study, orthanc_id in pacs.items():  # the verdict written back onto the PACS study
            rest(PACS_HTTP, f"/studies/{orthanc_id}/metadata/TanlVerdict", "PUT", routed[study].encode())
            check(rest(PACS_HTTP, f"/studies/{orthanc_id}/metadata/TanlVerdict") == routed[study], "metadata")
        summary.update(routed_studies=len(pacs), routed_accepted=len(in_orthanc), routed_quarantined=len(in_quarantine))

        listener.send_signal(signal.SIGTERM)
        check(listener.wait(120) == 0, "SIGTERM: the listener exits 0")
    finally:
        if listener is not None and listener.poll() is None:
            listener.kill()
        for process in orthancs.values():
            process.terminate()
        for process in orthancs.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
