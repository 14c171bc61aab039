"""The audit sink protocol: what the screener asks of an audit trail, met by the MLflow logger and the listener."""

from __future__ import annotations

import pytest

from tanl_guard.node.gate import DeferredAudit
from tanl_guard.pipeline.audit_sink import AuditSink, timed


@pytest.mark.parametrize("wanted", [False, True])
def test_audit_logger_and_deferred_audit_are_sinks(tmp_path, wanted):
    from tanl_guard.integrations.mlflow import AuditConfig, AuditLogger

    logger = AuditLogger(AuditConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", log_thumbnails=wanted,
                                     journal_dir=str(tmp_path / "journal")))
    deferred = DeferredAudit(logger.wants_thumbnails)
    assert isinstance(logger, AuditSink) and isinstance(deferred, AuditSink)
    assert logger.wants_thumbnails is wanted and deferred.wants_thumbnails is wanted
    assert not isinstance(object(), AuditSink)


def test_deferred_audit_replays_final_state_and_shifts_steps():
    deferred = DeferredAudit()
    deferred.log_verdicts([{"study": "k", "verdict": "accept", "step": 2}], step=2)
    deferred.log_final_state("state.pt")
    target = DeferredAudit()  # a real sink as the replay target: it records what it receives
    deferred.replay(target, offset=10)
    assert target.calls == [("log_verdicts", ([{"study": "k", "verdict": "accept", "step": 12}],), {"step": 12}),
                            ("log_final_state", ("state.pt",), {})]
    assert deferred.calls == []


def test_timed_adds_the_block_time_even_when_it_raises():
    seconds = {"audit": 0.0}
    with timed(seconds, "audit"):
        sum(range(1000))
    first = seconds["audit"]
    assert first > 0.0
    with pytest.raises(RuntimeError), timed(seconds, "audit"):
        raise RuntimeError("boom")
    assert seconds["audit"] >= first
