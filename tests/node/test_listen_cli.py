"""``tanl-guard listen``: usage errors and a busy state are refused before anything is built or started."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tanl_guard.cli._files import StateLock
from tanl_guard.cli.main import cli


@pytest.mark.parametrize(("args", "message"), [
    (["--forward", "AINODE@127.0.0.1"], "expected AE@HOST:PORT"),
    (["--forward", "A-TITLE-LONGER-THAN-16@h:104"], "not a DICOM AE title"),
    (["--forward", "AI@h:104"], "give the in-distribution labels"),
    (["--forward", "AI@h:104", "--id-label", "x", "--quarantine", "Q@h:1", "--quarantine-dir", "q"], "not both"),
    (["--forward", "AI@h:104", "--id-label", "x", "--max-spool", "10Q"], "a size such as 500M"),
])
def test_usage_errors(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["listen", "--spool", str(tmp_path / "spool"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_state_in_use_is_refused(tmp_path):
    state = tmp_path / "state.pt"
    lock = StateLock(state)
    try:
        result = CliRunner().invoke(cli, ["listen", "--spool", str(tmp_path / "spool"), "--state", str(state),
                                          "--forward", "AI@127.0.0.1:104", "--id-label", "brain MRI"])
    finally:
        lock.close()
    assert result.exit_code == 1 and "another tanl-guard" in result.output
    assert not (tmp_path / "spool" / "incoming").exists()  # nothing started
