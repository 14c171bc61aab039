# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Throughput and latency of the DICOM listener: studies/s and instances/s through it, and its added latency.

A sender C-STOREs a generated folder of studies (brain MR slabs cut from the MNI152 template and photos stored as
secondary captures, as ``screen_e2e`` writes them) to an in-process listener on 127.0.0.1, which judges them with
the surrogate encoder (unless ``--encoder`` says otherwise) and forwards the accepted ones to a pynetdicom
receiver; the others go to a quarantine folder. Measured:

- intake: instances/s acknowledged by the listener (each written and fsync'd to the spool before Success);
- sustained: studies/s and instances/s from the first instance sent to the last study delivered;
- added latency per study, on studies then sent one at a time to the idle listener (``--trickle``): from its last
  acknowledged instance to its delivery (forwarded or quarantined), minus the study timeout (the wait that
  defines "complete"): batch wait + judging + routing + delivery;
- resident memory of the process before the first study and after the last (compare two ``--studies`` sizes to see
  whether it grows with the studies seen).

    python benchmarks/listener.py                         # 60 studies, 1 s study timeout
    python benchmarks/listener.py --studies 200 --corpus wordnet --json results/listener.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

SMALL_CORPUS = ("cat", "dog", "teapot", "astronaut", "coffee mug", "building", "flower", "chest radiograph",
                "ultrasound scan", "computed tomography", "x-ray of the knee", "document", "keyboard", "car")


class _Receiver:
    """The AI node: a pynetdicom storage SCP that notes when each study's last instance arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.instances = 0
        self._server = None
        self.port = 0

    def start(self) -> _Receiver:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title="AINODE")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self._server.server_address[1]
        return self

    def _store(self, event) -> int:
        self.arrived[str(event.dataset.StudyInstanceUID)] = time.monotonic()
        self.instances += 1
        return 0

    def stop(self) -> None:
        self._server.shutdown()


class _Deliveries:
    """When each study was delivered: its last instance at the AI node, or its folder in the quarantine."""

    def __init__(self, receiver: _Receiver, quarantine: Path) -> None:
        self.receiver = receiver
        self.quarantine = quarantine
        self.quarantined: dict[str, float] = {}
        self._seen: set[str] = set()

    def _poll(self) -> None:
        from pydicom import dcmread

        for entry in self.quarantine.iterdir() if self.quarantine.is_dir() else []:
            if entry.name not in self._seen and not entry.name.startswith("."):
                first = next(entry.glob("*.dcm"), None)
                if first is not None:
                    self._seen.add(entry.name)
                    self.quarantined[str(dcmread(first, stop_before_pixels=True).StudyInstanceUID)] = time.monotonic()

    def times(self, studies: set[str]) -> dict[str, float]:
        return {s: t for s, t in {**self.receiver.arrived, **self.quarantined}.items() if s in studies}

    def wait_for(self, studies: set[str], timeout_s: float, listener) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._poll()
            if set(self.times(studies)) >= studies and not any(listener.spool.outbox.rglob("*.dcm")):
                return
            time.sleep(0.02)
        raise TimeoutError(f"{len(studies) - len(self.times(studies))} studies not delivered in {timeout_s} s")


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _send(port: int, files: list[Path], acked: dict[str, float]) -> int:
    """C-STORE the files over one association; note when each study's last instance was acknowledged."""
    import pynetdicom
    from pydicom import dcmread

    pynetdicom._config.STORE_SEND_CHUNKED_DATASET = True
    studies = {}
    contexts = set()
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        studies[path] = str(ds.StudyInstanceUID)
        contexts.add((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    ae = pynetdicom.AE(ae_title="MODALITY")
    for sop, syntax in sorted(contexts):
        ae.add_requested_context(sop, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="TANLGUARD")
    sent = 0
    for path in files:
        status = assoc.send_c_store(path)
        if status and status.Status == 0:
            acked[studies[path]] = time.monotonic()
            sent += 1
    assoc.release()
    return sent


def run(args: argparse.Namespace) -> dict:
    from pydicom import dcmread

    from benchmarks.screen_e2e import generate_folder
    from tanl_guard.demo import build_demo_folder
    from tanl_guard.guard import Guard
    from tanl_guard.node import ListenConfig, Listener, Peer
    from tanl_guard.pipeline.references import load_reference_images

    work = Path(tempfile.mkdtemp(prefix="tg_listener_bench_"))
    demo = build_demo_folder(work / "demo")
    folder = generate_folder(work / "studies", args.studies + args.trickle)
    files = sorted(p for p in folder.rglob("*.dcm"))
    corpus = args.corpus
    if corpus == "small":
        corpus = str(work / "negatives.txt")
        Path(corpus).write_text("\n".join(SMALL_CORPUS) + "\n")
    references = load_reference_images(demo.references, ["brain MRI"])
    guard = Guard.build(encoder=args.encoder, labels=["brain MRI"], reference_images=references, corpus=corpus,
                        device=args.device)
    receiver = _Receiver().start()
    config = ListenConfig(spool=str(work / "spool"), state_path=str(work / "state.pt"), port=0,
                          forward=Peer("AINODE", "127.0.0.1", receiver.port), quarantine_dir=str(work / "quarantine"),
                          study_timeout_s=args.timeout, batch_wait_s=args.batch_wait, batch_size=args.batch_size,
                          json_log=str(work / "verdicts.jsonl"))
    listener = Listener(guard, config).start()
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()

    rss_before = _rss_mib()
    by_study: dict[str, list[Path]] = {}
    for path in files:
        by_study.setdefault(str(dcmread(path, stop_before_pixels=True).StudyInstanceUID), []).append(path)
    studies = [by_study[k] for k in sorted(by_study)]
    burst, trickle = studies[: args.studies], studies[args.studies :]
    delivered = _Deliveries(receiver, work / "quarantine")

    # Burst: every study at once, as a PACS catching up; throughput from the first instance to the last delivery.
    acked: dict[str, float] = {}
    start = time.monotonic()
    sent = _send(listener.scp.port, [p for s in burst for p in s], acked)
    intake_s = time.monotonic() - start
    delivered.wait_for(set(acked), args.max_wait, listener)
    end = max(delivered.times(set(acked)).values())
    rss_after = _rss_mib()
    wall = end - start
    burst_seconds = dict(listener.seconds)

    # Trickle: one study at a time, the listener idle in between: its own latency beyond the study timeout.
    added = []
    for study in trickle:
        one: dict[str, float] = {}
        _send(listener.scp.port, study, one)
        delivered.wait_for(set(one), args.max_wait, listener)
        added += [delivered.times(set(one))[s] - one[s] - args.timeout for s in one]
    added.sort()
    listener.request_stop()
    thread.join(60)
    receiver.stop()
    shutil.rmtree(work, ignore_errors=True)
    return {
        "encoder": args.encoder, "corpus": args.corpus, "studies": len(acked), "instances": sent,
        "forwarded_studies": len(receiver.arrived), "quarantined_studies": len(delivered.quarantined),
        "trickle_studies": len(added), "study_timeout_s": args.timeout, "batch_wait_s": args.batch_wait,
        "batch_size": args.batch_size, "batches": listener.batch,
        "intake_instances_per_s": sent / intake_s, "sustained_studies_per_s": len(acked) / wall,
        "sustained_instances_per_s": sent / wall, "wall_s": wall,
        "added_latency_median_s": statistics.median(added) if added else None,
        "added_latency_p95_s": added[min(len(added) - 1, int(0.95 * len(added)))] if added else None,
        "burst_judging_s": {k: round(v, 2) for k, v in burst_seconds.items()},
        "burst_encode_share_of_wall": burst_seconds["encode"] / wall,
        "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(rss_after, 1),
        "load_average_1min": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="surrogate")
    parser.add_argument("--corpus", default="small", help="small (14 labels), wordnet, dicom, or a label file")
    parser.add_argument("--studies", type=int, default=60, help="studies sent at once (throughput)")
    parser.add_argument("--trickle", type=int, default=6, help="studies then sent one at a time (latency)")
    parser.add_argument("--timeout", type=float, default=1.0, help="the listener's --study-timeout")
    parser.add_argument("--batch-wait", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-wait", type=float, default=600.0, help="give up waiting for deliveries after this")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    main()
