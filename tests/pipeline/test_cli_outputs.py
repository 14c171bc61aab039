# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``screen``'s outputs under attack and accident: bad or altered checkpoints, two screens at once, an unwritable
report, and the operator's way back from a salted key to the files (``lookup``)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from tanl_guard.cli._files import LockedReport, StateLock
from tanl_guard.cli.main import cli
from tanl_guard.guard.state_file import save_signed
from tanl_guard.pipeline.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _complete_payload() -> dict:
    guard = {"detector": {"detector": "tanl"}, "history": torch.zeros(3, dtype=torch.float64), "n_images": 3}
    return {"manifest": "f" * 64, "last_batch": 0, "order": ["shuffled", 0], "guard": guard, "step": 1,
            "verdict_counts": {"reject": 1}}


def _bad_checkpoints(folder):
    folder.mkdir()
    good = folder / "good.pt"
    save_checkpoint(good, _complete_payload())
    data = good.read_bytes()
    flipped = bytearray(data)
    flipped[data.index(b"reject")] = ord("a")  # 'reject' -> 'aeject': one byte of a verdict changed
    tensor_flip = bytearray(data)
    tensor_flip[-200] ^= 0x01  # one bit deep in the archive (the tensors)
    foreign = folder / "foreign.pt"
    torch.save({"format": CHECKPOINT_FORMAT, **_complete_payload()}, foreign)  # right content, never signed
    missing = folder / "missing.pt"
    save_signed(missing, {"format": CHECKPOINT_FORMAT, "manifest": "x", "order": [], "guard": {}, "step": 0})
    files = {
        "verdict bytes": bytes(flipped),
        "tensor bit": bytes(tensor_flip),
        "random": os.urandom(4096),
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "header only": data[:40],
    }
    for name, content in files.items():
        (folder / (name.replace(" ", "_") + ".pt")).write_bytes(content)
    good.unlink()
    return sorted(folder.iterdir())


def test_bad_or_altered_checkpoints_are_refused_in_one_line_creating_nothing(demo_folder, tmp_path, monkeypatch):
    bad = _bad_checkpoints(tmp_path / "bad")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the default MLflow store and journal would land here
    runner = CliRunner()
    for path in bad:
        result = runner.invoke(cli, ["screen", str(demo_folder.studies), "--encoder", "surrogate", "--id-label", "x",
                                     "--state", str(path), "--resume"])
        assert result.exit_code == 1, (path.name, result.output)
        message = result.output.strip()
        assert message.startswith("Error: ") and "\n" not in message and "Traceback" not in message, message
        shown = runner.invoke(cli, ["state", "show", str(path)])
        assert shown.exit_code == 1 and "\n" not in shown.output.strip(), shown.output
    assert list(work.iterdir()) == []  # no mlflow.db, no journal
    assert sorted((tmp_path / "bad").iterdir()) == bad  # no lock files, nothing rewritten


def test_a_checkpoint_of_another_installation_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    save_checkpoint(path, _complete_payload())
    monkeypatch.setenv("TANL_GUARD_SALT", "another-installation")
    result = CliRunner().invoke(cli, ["state", "show", str(path)])
    assert result.exit_code == 1 and "integrity check" in result.output


def test_a_second_screen_on_the_same_state_or_report_is_refused(demo_folder, tmp_path):
    state, report = tmp_path / "state.pt", tmp_path / "report.jsonl"
    args = ["screen", str(demo_folder.studies), "--encoder", "surrogate", "--id-label", "brain MRI", "--no-audit",
            "--state", str(state)]
    held = StateLock(state)  # the first screen, still running
    try:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and "another tanl-guard screen is using the state file" in result.output
        assert f"process {os.getpid()}" in result.output
    finally:
        held.close()
    writing = LockedReport(report)
    try:
        result = CliRunner().invoke(cli, [*args, "--report", str(report)])
        assert result.exit_code == 1 and "another tanl-guard screen is writing the report" in result.output
    finally:
        writing.close()
    assert not state.exists() and not report.exists()


def test_an_unwritable_report_fails_before_screening(demo_folder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = CliRunner().invoke(cli, ["screen", str(demo_folder.studies), "--encoder", "surrogate", "--id-label", "x",
                                      "--no-audit", "--state", str(tmp_path / "state.pt"),
                                      "--report", str(blocker / "report.jsonl")])
    assert result.exit_code == 1 and "cannot write the outputs" in result.output
    assert not (tmp_path / "state.pt").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_verdicts_survive_a_report_that_fails_at_the_end_and_lookup_finds_the_files(demo_folder, corpus_file,
                                                                                    tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["screen", str(demo_folder.studies), "--encoder", "surrogate", "--id-label",
                                 "brain MRI", "--reference", str(demo_folder.references), "--corpus", str(corpus_file),
                                 "--cache-dir", str(tmp_path / "cache"), "--state", str(tmp_path / "state.pt"),
                                 "--no-audit", "-q", "--report", "/dev/full"])  # every write: no space left
    assert result.exit_code == 1 and "could not write the report" in result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 19  # every computed verdict reached stdout

    # lookup: from a key in the verdicts back to the files, for the holder of the folder and the salt
    study = next(line for line in lines if line["study"] and line["series"])
    before = {str(p) for p in tmp_path.rglob("*")}
    found = runner.invoke(cli, ["lookup", study["study"], str(demo_folder.studies), "--json"])
    assert found.exit_code == 0, found.output
    entry = json.loads(found.output)
    assert entry["kind"] == "study" and entry["files"]
    assert all((demo_folder.studies / rel).is_file() for rel in entry["files"])
    series = runner.invoke(cli, ["lookup", study["series"][0]["series"], str(demo_folder.studies)])
    assert series.exit_code == 0 and "series" in series.output
    salt = tmp_path / "other_salt"
    salt.write_text("not-the-salt")
    missed = runner.invoke(cli, ["lookup", study["study"], str(demo_folder.studies), "--salt-file", str(salt)])
    assert missed.exit_code == 1 and "no study, series or file" in missed.output
    assert {str(p) for p in tmp_path.rglob("*")} == before | {str(salt)}  # the mapping was written nowhere
