# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard screen`` as a real process against a real ``mlflow server``: it opens no connection but to the
tracking URI given (usage telemetry on by default in MLflow would call out), and SIGTERM stops it gracefully:
the batch in hand is judged and checkpointed, the run ends KILLED, the exit code is 143, and the checkpoint holds
what was reported, ready for ``--resume``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.filterwarnings(
    "ignore::pandas.errors.Pandas4Warning",
    "ignore::sqlalchemy.exc.SADeprecationWarning",
    "ignore::DeprecationWarning",
    "ignore::FutureWarning",
)

mlflow = pytest.importorskip("mlflow")

# Every outbound connection and name lookup of the process is recorded by an audit hook; one that is not to the
# test server is refused before a packet leaves. The first checkpoint write sends the process SIGTERM, so the
# signal always arrives mid-run, whatever the machine's speed.
RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    allowed = int(os.environ["TG_TEST_PORT"])
    log = open(os.environ["TG_TEST_LOG"], "a")
    state = os.path.basename(os.environ["TG_TEST_STATE"])
    sent = []

    def hook(event, args):
        if event == "socket.connect":
            address = args[1]
            ok = not isinstance(address, tuple) or (address[0] in ("127.0.0.1", "::1") and address[1] == allowed)
            log.write(f"connect {address!r} {'ok' if ok else 'REFUSED'}\\n")
            log.flush()
            if not ok:
                raise PermissionError("test: outbound connection refused")
        elif event == "socket.getaddrinfo" and args[0] not in ("127.0.0.1", "localhost", "::1", None):
            log.write(f"lookup {args[0]!r} REFUSED\\n")
            log.flush()
            raise PermissionError("test: name lookup refused")
        elif event == "open" and not sent and isinstance(args[0], str):
            name = os.path.basename(args[0])
            if name.startswith(state) and name.endswith(".tmp"):
                sent.append(True)
                os.kill(os.getpid(), signal.SIGTERM)

    sys.addaudithook(hook)
    from tanl_guard.cli.main import cli
    cli.main(sys.argv[1:], prog_name="tanl-guard")
    """
)
CORPUS = "teapot\ncat\ndog\nbicycle\ncar\nmountain\nbeach\nguitar\nbook\nbottle\nchest radiograph\nultrasound scan\n"
# Variables under which MLflow assumes a CI or test run and keeps its telemetry off by itself.
CI_MARKERS = ("CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "TF_BUILD", "JENKINS_URL")


def test_sigterm_stops_gracefully_and_nothing_calls_out(tmp_path, mlflow_server, monkeypatch):
    from tanl_guard.demo import build_demo_folder

    monkeypatch.setenv("TANL_GUARD_SALT", "process-test")
    monkeypatch.chdir(tmp_path)  # the journal of a run on a tracking server goes to the working folder
    demo = build_demo_folder(tmp_path / "demo")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    state, sockets = tmp_path / "state.pt", tmp_path / "sockets.log"
    args = ["screen", str(demo.studies), "--encoder", "surrogate", "--id-label", "brain MRI", "--reference",
            str(demo.references), "--corpus", str(corpus), "--cache-dir", str(tmp_path / "cache"), "--state",
            str(state), "--checkpoint-every", "1", "--batch-size", "2", "--tracking-uri", mlflow_server["uri"],
            "--json", "-q"]
    # No switch of ours in the environment: the product must turn the libraries' telemetry off itself.
    ours = {"MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "HF_HUB_DISABLE_TELEMETRY"}
    env = {k: v for k, v in os.environ.items() if k not in CI_MARKERS and k not in ours}
    env.update(TG_TEST_PORT=str(mlflow_server["port"]), TG_TEST_LOG=str(sockets), TG_TEST_STATE=str(state),
               PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "stopped by SIGTERM" in proc.stderr and "--resume" in proc.stderr
    done = [json.loads(line) for line in proc.stdout.splitlines()]
    assert 0 < len([d for d in done if d["study"]]) < 18  # the batch in hand was judged, the rest left
    log = sockets.read_text().splitlines()
    assert log and all(line.endswith(" ok") for line in log), log  # only the tracking server was reached

    client = mlflow.MlflowClient(mlflow_server["uri"])
    runs = client.search_runs([client.get_experiment_by_name("tanl-guard").experiment_id],
                              filter_string="tags.`mlflow.source.name` = 'tanl-guard screen'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    run = runs[0]
    assert run.info.status == "KILLED" and run.data.tags["audit.end_reason"] == "SIGTERM"

    # The checkpoint holds exactly what was reported (resume itself is tested in tests/pipeline): verified, readable.
    from click.testing import CliRunner

    from tanl_guard.cli.main import cli

    shown = CliRunner().invoke(cli, ["state", "show", str(state)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["studies_done"] == len([d for d in done if d["study"]])
    assert json.loads(shown.stdout)["metadata"]["run_id"] == run.info.run_id
