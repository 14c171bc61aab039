"""Delivery: whole studies, each instance unchanged in its own transfer syntax; a target that is down only delays."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import stat
import time

from dicom_peers import Receiver, dataset_bytes
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tanl_guard.node import FolderDestination, Forwarder, Peer, PeerDestination, Spool

COMPRESSED = ("SC_rgb_rle.dcm", "SC_rgb_jls_lossy_line.dcm", "image_dfl.dcm", "MR_small_jp2klossless.dcm",
              "SC_rgb_jpeg_dcmtk.dcm", "CT_small.dcm")


def _study(spool: Spool, names=COMPRESSED) -> tuple[str, dict[str, tuple[str, str]]]:
    """Store packaged files as one study (distinct SOP instances); their transfer syntaxes and dataset digests."""
    expected = {}
    for i, name in enumerate(names):
        path = get_testdata_file(name, download=False)
        ds = dcmread(path)
        uid = f"2.25.{1000 + i}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.StudyInstanceUID = "2.25.7"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        spool.store(buffer.getvalue(), "2.25.7", uid)
        expected[uid] = str(ds.file_meta.TransferSyntaxUID)
    key = spool.study_key("2.25.7")
    folder = spool.take([key], 1)
    spool.route(folder / key, "forward", 1, json.dumps({"study": key, "verdict": "accept"}))
    spool.remove_empty_batch(folder)
    return key, expected


def test_forward_sends_the_study_whole_and_unchanged(tmp_path, node_salt, receiver):
    receiver.start()
    spool = Spool(tmp_path / "spool", study_timeout_s=1)
    _, expected = _study(spool)
    stored = {}
    for path in spool.outbox.rglob("*.dcm"):
        stored[str(dcmread(path).SOPInstanceUID)] = hashlib.sha256(dataset_bytes(path)).hexdigest()
    forwarder = Forwarder(spool, "forward", PeerDestination(Peer("AINODE", "127.0.0.1", receiver.port)))
    forwarder.run_once()
    assert forwarder.delivered == 1 and forwarder.failures == 0
    assert set(receiver.instances) == set(expected)
    for uid, (_, syntax, digest) in receiver.instances.items():
        assert syntax == expected[uid]  # its own transfer syntax, never transcoded
        assert digest == stored[uid]  # the dataset bytes as they were received
    assert spool.outbox_entries("forward") == [] and spool.bytes_used == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_target_that_is_down_only_delays_delivery(tmp_path, node_salt):
    spool = Spool(tmp_path / "spool", study_timeout_s=1)
    _, expected = _study(spool, COMPRESSED[:2])
    port = _free_port()
    forwarder = Forwarder(spool, "forward", PeerDestination(Peer("AINODE", "127.0.0.1", port), timeout_s=2),
                          backoff_s=0.2, max_backoff_s=0.4)
    wait = forwarder.run_once()
    assert forwarder.failures == 1 and "no association" in forwarder.last_error
    assert len(spool.outbox_entries("forward")) == 1 and len(list(spool.outbox.rglob("*.dcm"))) == 2
    assert 0 < wait <= 0.2
    forwarder.run_once()  # not due yet: not tried again
    assert forwarder.failures == 1
    receiver = Receiver(port=port).start()
    try:
        forwarder.start()
        for _ in range(100):
            if forwarder.delivered:
                break
            time.sleep(0.05)
        forwarder.stop(5)
    finally:
        receiver.stop()
    assert forwarder.delivered == 1 and set(receiver.instances) == set(expected) and receiver.stores == 2
    assert spool.outbox_entries("forward") == []


def test_a_refusing_target_keeps_the_study(tmp_path, node_salt):
    spool = Spool(tmp_path / "spool", study_timeout_s=1)
    _study(spool, COMPRESSED[:1])
    receiver = Receiver(refuse=0xA700).start()
    try:
        forwarder = Forwarder(spool, "forward", PeerDestination(Peer("AINODE", "127.0.0.1", receiver.port)))
        forwarder.run_once()
    finally:
        receiver.stop()
    assert forwarder.failures == 1 and "0xA700" in forwarder.last_error
    assert len(list(spool.outbox.rglob("*.dcm"))) == 1


def test_quarantine_folder_gets_the_study_and_its_verdict(tmp_path, node_salt):
    spool = Spool(tmp_path / "spool", study_timeout_s=1)
    key, expected = _study(spool, COMPRESSED[:3])
    forwarder = Forwarder(spool, "forward", FolderDestination(tmp_path / "quarantine"))
    forwarder.run_once()
    (entry,) = (tmp_path / "quarantine").iterdir()
    assert entry.name.endswith(key) and stat.S_IMODE(entry.stat().st_mode) == 0o700
    assert {dcmread(p).SOPInstanceUID for p in entry.glob("*.dcm")} == set(expected)
    assert key in (entry / "_verdict.json").read_text()
    assert spool.outbox_entries("forward") == [] and spool.bytes_used == 0
