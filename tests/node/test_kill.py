"""SIGKILL mid-stream and restart: nothing acknowledged is lost, nothing is judged or sent twice; SIGTERM exits 0."""

from __future__ import annotations

import os
import signal
import threading
from collections import defaultdict

from dicom_peers import Receiver, dicom_files, echo, send_files
from listener_process import free_port, judged_lines, listener_env, spool_is_idle, start_listener, wait_until
from pydicom import dcmread

from tanl_guard.privacy import Hasher

STARTUP_S = 240  # building the guard in a fresh process: seconds on a quiet machine, minutes on a loaded one


def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(demo, corpus_file, corpus_cache, tmp_path,
                                                                   node_salt):
    port, target = free_port(), free_port()
    spool, state, quarantine, json_log = (tmp_path / n for n in ("spool", "state.pt", "quarantine", "v.jsonl"))
    args = ["--port", str(port), "--spool", str(spool), "--state", str(state), "--forward",
            f"AINODE@127.0.0.1:{target}", "--quarantine-dir", str(quarantine), "--json-log", str(json_log),
            "--study-timeout", "1", "--batch-wait", "0.3", "--retry-backoff", "0.2", "--batch-size", "8",
            "--encoder", "surrogate", "--id-label", "brain MRI", "--reference", str(demo.references),
            "--corpus", str(corpus_file), "--cache-dir", str(corpus_cache), "--no-audit", "--quiet"]
    env = listener_env(node_salt)
    log = tmp_path / "listener.log"
    files = dicom_files(demo.studies)
    by_study = defaultdict(list)
    for path in files:
        by_study[dcmread(path, stop_before_pixels=True).StudyInstanceUID].append(path)
    studies = [by_study[k] for k in sorted(by_study)]
    first, during, after = studies[:6], studies[6:12], studies[12:]

    process = start_listener(args, env, log)
    statuses: dict = {}
    try:
        wait_until(lambda: echo(port), STARTUP_S, "the listener to answer C-ECHO", process, log)
        statuses.update(send_files(port, [p for s in first for p in s]))
        wait_until(lambda: judged_lines(json_log), 120, "a first batch to be judged", process, log)
        # the forward target is down: accepted studies wait in the outbox; now kill while a sender is mid-stream
        started = threading.Event()
        sender = threading.Thread(target=lambda: statuses.update(
            send_files(port, [p for s in during for p in s], on_first=started.set)))
        sender.start()
        started.wait(30)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        sender.join(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    lost_in_flight = [p for s in during for p in s if statuses.get(p) != 0]

    receiver = Receiver(port=target)
    process = start_listener(args, env, log)
    try:
        wait_until(lambda: echo(port), STARTUP_S, "the restarted listener", process, log)
        receiver.start()  # the target comes up only now: delivery was delayed, not lost
        statuses.update(send_files(port, lost_in_flight + [p for s in after for p in s]))  # a sender retries
        acknowledged = defaultdict(set)
        key = Hasher(node_salt)
        for path, status in statuses.items():
            if status == 0:
                ds = dcmread(path, stop_before_pixels=True)
                acknowledged[key("study", ds.StudyInstanceUID)].add(ds.SOPInstanceUID)
        wait_until(lambda: {x["study"] for x in judged_lines(json_log)} >= set(acknowledged) and spool_is_idle(spool),
                   180, "every study to be judged and delivered", process, log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0, log.read_text()[-3000:]
    finally:
        receiver.stop()
        if process.poll() is None:
            process.kill()

    placed = defaultdict(list)  # SOP instance -> where it ended
    for sop in receiver.instances:
        placed[sop].append("forward")
    for entry in quarantine.iterdir():
        for path in entry.glob("*.dcm"):
            placed[dcmread(path, stop_before_pixels=True).SOPInstanceUID].append("quarantine")
    sent = {sop for instances in acknowledged.values() for sop in instances}
    assert set(placed) == sent  # nothing acknowledged lost, nothing unacknowledged invented
    assert all(len(where) == 1 for where in placed.values())  # forwarded or quarantined, once
    assert receiver.stores == len(receiver.instances)  # no instance sent twice
    lines = judged_lines(json_log)
    assert {x["study"] for x in lines} == set(acknowledged)
    counts = defaultdict(int)
    for line in lines:
        counts[line["study"]] += 1
    # a study is judged once; only the one the kill cut in two may be judged as two parts
    assert sum(n - 1 for n in counts.values()) <= 1, counts
    assert not list((spool / "tmp").iterdir())
