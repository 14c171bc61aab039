"""The listener in-process: every acknowledged instance ends in exactly one place, verdicts journaled, restart exact."""

from __future__ import annotations

import copy
import json
import stat
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict

import pytest
from dicom_peers import dicom_files, send_files
from pydicom import dcmread

from tanl_guard.node import ListenConfig, Listener, Peer, Spool, StatusServer
from tanl_guard.privacy import Hasher

PHI = ("Demo^Volunteer", "DEMO-", "19700101", "1.2.840.113619", "1.3.6.1.4.1.5962", "1.2.826.0.1")


def _wait(condition, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_acknowledged_instance_is_forwarded_or_quarantined_once(demo, make_guard, tmp_path, node_salt,
                                                                        receiver):
    receiver.start()
    config = ListenConfig(spool=str(tmp_path / "spool"), state_path=str(tmp_path / "state.pt"), port=0,
                          forward=Peer("AINODE", "127.0.0.1", receiver.port), quarantine_dir=str(tmp_path / "q"),
                          study_timeout_s=0.5, batch_wait_s=0.3, batch_size=8, json_log=str(tmp_path / "v.jsonl"))
    listener = Listener(make_guard(), config).start()
    status_server = StatusServer(listener).start()
    thread = threading.Thread(target=listener.run)
    thread.start()
    try:
        statuses = send_files(listener.scp.port, dicom_files(demo.studies))
        acknowledged = defaultdict(set)  # study key -> SOP instance UIDs
        key = Hasher(node_salt)
        for path, status in statuses.items():
            if status == 0:
                ds = dcmread(path, stop_before_pixels=True)
                acknowledged[key("study", ds.StudyInstanceUID)].add(ds.SOPInstanceUID)
        json_log = tmp_path / "v.jsonl"
        _wait(lambda: len([x for x in _lines(json_log) if x["study"]]) >= len(acknowledged)
              and not any(p.is_file() for p in listener.spool.outbox.rglob("*")))
        base = f"http://127.0.0.1:{status_server.port}"
        status = json.loads(urllib.request.urlopen(base + "/status", timeout=30).read())
        assert json.loads(urllib.request.urlopen(base + "/health", timeout=30).read()) == {"ok": True}
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + "/anything", timeout=30)
    finally:
        status_server.stop()
        listener.request_stop()
        thread.join(60)
    lines = [x for x in _lines(json_log) if x["study"]]
    assert sorted(x["study"] for x in lines) == sorted(acknowledged)  # each study judged once
    verdict = {x["study"]: x["verdict"] for x in lines}
    forwarded = defaultdict(set)
    for sop, (study, _, _) in receiver.instances.items():
        forwarded[key("study", study)].add(sop)
    quarantined = defaultdict(set)
    for entry in (tmp_path / "q").iterdir():
        study = entry.name.split("-", 1)[1]
        quarantined[study] |= {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in entry.glob("*.dcm")}
        assert json.loads((entry / "_verdict.json").read_text())["verdict"] == verdict[study] != "accept"
    assert set(forwarded) == {s for s, v in verdict.items() if v == "accept"}
    assert not set(forwarded) & set(quarantined)
    for study, instances in acknowledged.items():  # whole studies, in exactly one place
        assert (forwarded.get(study) or quarantined.get(study)) == instances
    assert receiver.stores == sum(len(v) for v in forwarded.values())  # nothing sent twice
    assert {"accept", "reject", "unreadable"} <= set(verdict.values())
    assert status["studies_judged"] == len(lines) and status["spool"]["received_instances"] == sum(
        len(v) for v in acknowledged.values())
    assert status["routes"]["forward"]["delivered"] == len(forwarded) and 0 < status["threshold"] < 1
    assert status["spool"]["outbox_forward"] == 0 and status["selected_negatives"]
    # the demo's few views leave the fused guard's label gate too young to refuse, and the status says so
    assert status["label_warmup"] == listener.guard.label_warmup() is not None
    text = (tmp_path / "v.jsonl").read_text() + json.dumps(status)
    assert not any(marker in text for marker in PHI)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    assert listener.spool.bytes_used == 0


def _store(spool: Spool, files) -> None:
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        spool.store(path.read_bytes(), ds.StudyInstanceUID, ds.SOPInstanceUID)


def _halves(demo):
    files = dicom_files(demo.studies)
    by_study = defaultdict(list)
    for path in files:
        by_study[dcmread(path, stop_before_pixels=True).StudyInstanceUID].append(path)
    studies = [by_study[k] for k in sorted(by_study)]
    return [p for s in studies[::2] for p in s], [p for s in studies[1::2] for p in s]


@pytest.fixture
def audit_store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _audit(store, journal):
    from tanl_guard.integrations.mlflow import AuditConfig, AuditLogger

    return AuditLogger(AuditConfig(tracking_uri=store, journal_dir=str(journal), run_name="listener"))


def test_a_restart_continues_the_detector_state_exactly(demo, make_guard, tmp_path, node_salt, audit_store):
    first, second = _halves(demo)
    far = time.monotonic() + 3600  # every study stored so far is complete "now"

    def config(name):
        return ListenConfig(spool=str(tmp_path / name / "spool"), state_path=str(tmp_path / name / "state.pt"),
                            port=0, study_timeout_s=1, batch_wait_s=0, batch_size=8,
                            json_log=str(tmp_path / name / "v.jsonl"))

    # Without a stop: two batches in one process.
    straight = Listener(make_guard(), config("straight"))
    _store(straight.spool, first)
    assert straight.step_once(far)
    _store(straight.spool, second)
    assert straight.step_once(far + 10)
    expected = _lines(tmp_path / "straight" / "v.jsonl")
    expected_state = copy.deepcopy(straight.guard.state_dict())

    # With a crash after the second batch was taken (and even gated) but not committed.
    audit = _audit(audit_store, tmp_path / "journal")
    audit.start(params={"entry": "test"})
    crashed = Listener(make_guard(), config("crash"), audit=audit)
    crashed._recover()
    _store(crashed.spool, first)
    assert crashed.step_once(far)
    _store(crashed.spool, second)
    keys = [c.key for c in crashed.spool.complete(far + 10)]
    folder = crashed.spool.take(keys, crashed.batch + 1)
    from tanl_guard.node.gate import judge_folder

    judge_folder(crashed.guard, folder, "slices:3", 8, 0)  # the state moved on in memory, never committed
    with open(tmp_path / "crash" / "v.jsonl", "a") as handle:  # and lines written that the commit never covered
        handle.write('{"study": "half-written"}\n')
    audit.finish("KILLED", reason="test crash")
    run_id = audit.run_id

    audit = _audit(audit_store, tmp_path / "journal")
    restarted = Listener(make_guard(), config("crash"), audit=audit)
    checkpoint_run = restarted.config.state_path
    from tanl_guard.pipeline import load_checkpoint

    assert load_checkpoint(checkpoint_run)["metadata"]["run_id"] == run_id
    from tanl_guard.cli.state import describe_checkpoint

    shown = describe_checkpoint(load_checkpoint(checkpoint_run))  # `tanl-guard state show` on a listener's state
    assert shown["studies_done"] == sum(shown["verdicts"][v] for v in ("accept", "reject", "unreadable")) > 0
    audit.start(params={"entry": "test"}, resume_run_id=run_id)
    restarted._recover()
    assert restarted.resumed and restarted.step == len([x for x in expected if x["study"]]) - len(keys)
    assert restarted.step_once(far + 20)  # the taken batch folder, judged again from the committed state
    assert not restarted.step_once(far + 30)
    assert _lines(tmp_path / "crash" / "v.jsonl") == expected
    state = restarted.guard.state_dict()
    assert state["n_images"] == expected_state["n_images"]
    assert state["history"].tolist() == expected_state["history"].tolist()
    restarted.audit.log_state(restarted.guard.snapshot(), step=restarted.step)
    assert audit.finish("FINISHED")

    from mlflow import MlflowClient

    run = MlflowClient(audit_store).get_run(run_id)
    assert run.data.metrics["screen/studies"] == len([x for x in expected if x["study"]])
    artifacts = [a.path for a in MlflowClient(audit_store).list_artifacts(run_id, "state")]
    assert artifacts, "state snapshots in the run"


def test_a_restart_cuts_back_only_its_own_json_log(make_guard, tmp_path, node_salt):
    own, other = tmp_path / "own.jsonl", tmp_path / "other.jsonl"
    own.write_text('{"study": "earlier"}\n')

    def listener(json_log):
        return Listener(make_guard(), ListenConfig(spool=str(tmp_path / "spool"), state_path=str(tmp_path / "s.pt"),
                                                   port=0, json_log=str(json_log)))

    listener(own)._recover()  # the first start commits the log's length
    with open(own, "a") as handle:
        handle.write('{"study": "of a batch never committed"}\n')
    other.write_text('{"study": "someone else\'s"}\n' * 3)
    listener(other)._recover()
    assert len(other.read_text().splitlines()) == 3  # not the checkpoint's log: left alone
    listener(own)._recover()
    assert own.read_text() == '{"study": "earlier"}\n'
