"""The intake: study completion by idle timeout, the private crash-safe spool, and the C-STORE SCP in front of it."""

from __future__ import annotations

import logging
import stat

import pytest
from dicom_peers import dataset_bytes, dicom_files, echo, send_files
from pydicom import dcmread

from tanl_guard.node import Spool, SpoolFull, StorageSCP, StudyTracker
from tanl_guard.node.scp import STATUS_OUT_OF_RESOURCES


def test_a_study_is_complete_after_its_idle_timeout():
    tracker = StudyTracker(2.0)
    tracker.touch("a", now=0.0)
    tracker.touch("b", now=1.0)
    tracker.touch("a", now=1.5)  # a new instance restarts the clock
    assert tracker.complete(now=2.9) == []
    done = tracker.complete(now=3.0)
    assert [(s.key, s.instances) for s in done] == [("b", 1)]
    assert [s.key for s in tracker.complete(now=3.5)] == ["b", "a"]  # earliest completed first
    tracker.pop("b")
    assert len(tracker) == 1 and tracker.instances() == 2
    with pytest.raises(ValueError):
        StudyTracker(0)


def test_spool_is_private_atomic_and_capped(tmp_path, node_salt):
    data = b"\0" * 128 + b"DICM" + b"x" * 400
    spool = Spool(tmp_path / "spool", max_bytes=1200, study_timeout_s=5)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    key = spool.store(data, "1.2.3", "1.2.3.1")
    assert key == spool.study_key("1.2.3") and "1.2.3" not in key
    spool.store(data, "1.2.3", "1.2.3.1")  # the same instance again replaces it
    files = list((spool.incoming / key).iterdir())
    assert len(files) == 1 and files[0].read_bytes() == data and spool.bytes_used == len(data)
    with pytest.raises(SpoolFull):
        spool.store(data * 2, "1.2.3", "1.2.3.2")
    assert spool.bytes_used == len(data) and len(list((spool.incoming / key).iterdir())) == 1
    assert spool.refused == 1 and not list(spool.tmp.iterdir())
    # a restart finds the intake again: the study completes one timeout after the restart
    again = Spool(tmp_path / "spool", max_bytes=1200, study_timeout_s=5)
    assert again.receiving() == (1, 1) and again.bytes_used == len(data)
    assert again.complete() == []


def test_scp_spools_every_instance_as_received_before_success(demo, tmp_path, node_salt):
    spool = Spool(tmp_path / "spool", study_timeout_s=5)
    scp = StorageSCP(spool, port=0).start()
    try:
        assert echo(scp.port)
        files = dicom_files(demo.studies)
        statuses = send_files(scp.port, files)
    finally:
        scp.stop()
    sent = [p for p, s in statuses.items() if s == 0]
    assert len(sent) >= 40 and set(statuses.values()) <= {0, -1}
    stored = {dcmread(p).SOPInstanceUID: p for p in spool.incoming.rglob("*.dcm")}
    assert spool.received == len(sent) and len(stored) == len({dcmread(p).SOPInstanceUID for p in sent})
    compressed = 0
    for source in sent:
        original = dcmread(source)
        copy = dcmread(stored[original.SOPInstanceUID])
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert dataset_bytes(stored[original.SOPInstanceUID]) == dataset_bytes(source)  # as sent, compressed or not
        compressed += original.file_meta.TransferSyntaxUID.is_compressed
    assert compressed >= 2
    for path in spool.root.rglob("*"):  # names are salted keys, never UIDs
        assert "1.2." not in path.name and "1.3." not in path.name


def test_scp_refuses_beyond_the_cap_with_out_of_resources_and_says_so(demo, tmp_path, node_salt, caplog):
    files = dicom_files(demo.studies)
    sizes = sorted(p.stat().st_size for p in files)
    spool = Spool(tmp_path / "spool", max_bytes=sum(sizes[:3]) + 2000, study_timeout_s=5)
    scp = StorageSCP(spool, port=0).start()
    try:
        with caplog.at_level(logging.WARNING, logger="tanl_guard.node"):
            statuses = send_files(scp.port, files)
    finally:
        scp.stop()
    refused = [p for p, s in statuses.items() if s == STATUS_OUT_OF_RESOURCES]
    assert refused and spool.refused == len(refused)
    assert spool.bytes_used <= spool.max_bytes
    assert sum(p.stat().st_size for p in spool.incoming.rglob("*.dcm")) == spool.bytes_used
    assert len(list(spool.incoming.rglob("*.dcm"))) == sum(1 for s in statuses.values() if s == 0)
    assert any("out of resources" in r.getMessage() and "spool full" in r.getMessage() for r in caplog.records)
