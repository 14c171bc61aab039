"""The ``tanl-guard`` command line, run through click's CliRunner on the real demo folder and surrogate encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tanl_guard.cli.main import cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _screen_args(demo_folder, corpus_file, tmp_path, *extra):
    return ["screen", str(demo_folder.studies), "--encoder", "surrogate", "--id-label", "brain MRI",
            "--reference", str(demo_folder.references), "--corpus", str(corpus_file),
            "--cache-dir", str(tmp_path / "cache"), "--state", str(tmp_path / "state.pt"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--batch-size", "8", *extra]


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "screen" in result.output
    assert runner.invoke(cli, ["--version"]).output.startswith("tanl-guard")


@pytest.mark.parametrize("args, message", [
    (["--threshold", "often"], "threshold"),
    (["--view", "slices:0"], "view"),
    (["--detector", "magic"], "detector"),
])
def test_usage_errors_exit_2(demo_folder, args, message):
    result = CliRunner().invoke(cli, ["screen", str(demo_folder.studies), "--id-label", "x", *args])
    assert result.exit_code == 2 and message in result.output.lower()


def test_no_labels_is_a_usage_error(demo_folder):
    result = CliRunner().invoke(cli, ["screen", str(demo_folder.studies)])
    assert result.exit_code == 2 and "--id-label" in result.output


def test_missing_weights_exit_1_with_the_alternatives(demo_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["screen", str(demo_folder.studies), "--id-label", "brain MRI", "--no-audit"])
    assert result.exit_code == 1
    assert "biomedclip" in result.output and "surrogate" in result.output
    assert not list(tmp_path.glob("*.lock"))  # the state's lock is gone with the run


def test_screen_json_audit_exit_codes_and_resume(demo_folder, corpus_file, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, _screen_args(demo_folder, corpus_file, tmp_path, "--json", "--fail-on-reject",
                                             "--report", str(tmp_path / "report.jsonl")))
    assert result.exit_code == 3, result.output  # the demo folder holds out-of-distribution studies
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # stdout: JSON lines and nothing else
    assert len(lines) == 19 and sum(line["study"] is None for line in lines) == 1  # 18 studies, 1 orphan file
    assert {line["verdict"] for line in lines} <= {"accept", "reject", "unreadable"}
    assert (tmp_path / "report.jsonl").read_text().splitlines() == result.stdout.splitlines()
    assert "screening" in result.stderr  # the progress bar went to stderr

    # The audit run in MLflow: params, tags, metrics and the verdict table, without patient data.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tanl-guard")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["encoder.id"].startswith("surrogate")
    assert run.data.params["detector"] == "tanl+knn"  # the fused default, as --reference is given
    assert "screen/reject_rate" in run.data.metrics
    # what ran, said in one place: the run name, mlflow.source tags, config.sha256 of the params as described
    from tanl_guard.integrations.mlflow import config_sha256

    assert run.info.run_name.startswith("screen tanl+knn surrogate ")
    assert run.data.tags["mlflow.source.name"] == "tanl-guard screen" and run.data.tags["mlflow.source.type"] == "LOCAL"
    params = json.loads(Path(client.download_artifacts(run.info.run_id, "config/run_params.json", str(tmp_path))).read_text())
    assert run.data.tags["config.sha256"] == config_sha256(params)
    # the detector's state at every gate batch, not only at checkpoints
    assert len(client.get_metric_history(run.info.run_id, "state/threshold")) > 2
    assert len(client.get_metric_history(run.info.run_id, "state/negatives_churn")) > 1
    # the reference set and the folder as datasets, by digest and counts only
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"reference images", "screened folder"}
    assert json.loads(inputs["screened folder"].profile)["studies"] == 18
    summary = runner.invoke(cli, ["audit", "summary", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                  "--json"])
    assert summary.exit_code == 0, summary.output
    assert "Demo^Volunteer" not in summary.output and "DEMO-" not in summary.output
    data = json.loads(summary.stdout)
    # one study count: 18 studies (one of them unreadable) and one unreadable file outside any study, as above
    assert data["studies"] == 18 and data["orphan_files"] == 1 and data["counts"]["unreadable"] == 1
    assert data["final_state"] == "state/final.pt" and data["status"] == "FINISHED"
    # from `screen` to `state show RUN_ID`: the saved state of the run, read back from MLflow and verified
    from_run = runner.invoke(cli, ["state", "show", run.info.run_id, "--tracking-uri",
                                   f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert from_run.exit_code == 0, from_run.output
    assert json.loads(from_run.stdout)["studies_done"] == 18

    # State inspection, then a resumed run: nothing left to screen, same verdicts, --strict reports unreadables.
    shown = runner.invoke(cli, ["state", "show", str(tmp_path / "state.pt")])
    assert shown.exit_code == 0 and json.loads(shown.output)["studies_done"] == 18
    again = runner.invoke(cli, _screen_args(demo_folder, corpus_file, tmp_path, "--json", "--resume", "--strict"))
    assert again.exit_code == 4, again.output
    assert again.stdout.splitlines() == result.stdout.splitlines()


def test_corpus_show(corpus_file):
    result = CliRunner().invoke(cli, ["corpus", "show", str(corpus_file), "--limit", "3"])
    assert result.exit_code == 0 and "teapot" in result.output
    data = json.loads(CliRunner().invoke(cli, ["corpus", "show", str(corpus_file), "--json"]).output)
    assert data["size"] == 40


def test_version_imports_no_heavy_package():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom tanl_guard.cli.main import cli\n"
            "out = CliRunner().invoke(cli, ['--version']).output\n"
            "heavy = [m for m in ('torch', 'mlflow', 'pydicom', 'numpy') if m in sys.modules]\n"
            "assert out.startswith('tanl-guard') and not heavy, (out, heavy)\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def test_help_texts_and_examples():
    runner = CliRunner()
    screen_help = runner.invoke(cli, ["screen", "--help"]).output
    assert "Examples:" in screen_help and "Exit codes:" in screen_help and "143" in screen_help
    for option in ("--experiment", "--run-name", "--tracking-uri"):
        line = screen_help[screen_help.index(option):].split("\n--", 1)[0]
        assert len(line.split(None, 1)[1]) > 20, option  # has a help text
    assert "Examples:" in runner.invoke(cli, ["corpus", "build", "--help"]).output
    assert "JSON object" in runner.invoke(cli, ["audit", "summary", "--help"]).output


def test_empty_folder_says_nothing_was_screened(tmp_path, corpus_file):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    args = ["screen", str(empty), "--encoder", "surrogate", "--id-label", "brain MRI", "--corpus", str(corpus_file),
            "--cache-dir", str(tmp_path / "cache"), "--state", str(tmp_path / "state.pt"), "--no-audit", "-q"]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert "Nothing was screened" in text.stdout and "leading activated negatives" not in text.stdout
    strict = CliRunner().invoke(cli, [*args, "--json", "--strict"])
    assert strict.exit_code == 5 and strict.stdout == "" and "nothing was screened" in strict.stderr


def test_outputs_inside_the_input_folder_are_refused(demo_folder, monkeypatch):
    before = sorted(p.name for p in demo_folder.studies.iterdir())
    monkeypatch.chdir(demo_folder.studies)
    result = CliRunner().invoke(cli, ["screen", ".", "--encoder", "surrogate", "--id-label", "brain MRI"])
    assert result.exit_code == 2 and "read-only input" in result.output and "--state" in result.output
    assert sorted(p.name for p in demo_folder.studies.iterdir()) == before  # nothing written there


def test_a_work_dir_inside_the_input_folder_is_refused(demo_folder, tmp_path):
    before = sorted(p.name for p in demo_folder.studies.iterdir())
    result = CliRunner().invoke(cli, ["screen", str(demo_folder.studies), "--encoder", "surrogate", "--id-label", "x",
                                      "--no-audit", "--state", str(tmp_path / "s.pt"),
                                      "--work-dir", str(demo_folder.studies / "work")])
    assert result.exit_code == 2 and "--work-dir" in result.output
    assert sorted(p.name for p in demo_folder.studies.iterdir()) == before and not list(tmp_path.iterdir())


def test_readers_create_no_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    summary = runner.invoke(cli, ["audit", "summary", "--tracking-uri", f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"])
    assert summary.exit_code == 1 and "no MLflow store" in summary.output
    shown = runner.invoke(cli, ["state", "show", "0123456789abcdef0123456789abcdef"])
    assert shown.exit_code == 1 and "Traceback" not in shown.output
    assert not runner.invoke(cli, ["state", "show", "missing.pt"]).exit_code == 0
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no journal, no folder


def test_bad_tracking_uri_is_a_usage_error(demo_folder, tmp_path):
    result = CliRunner().invoke(cli, ["screen", str(demo_folder.studies), "--id-label", "x",
                                      "--tracking-uri", "foo://bar", "--state", str(tmp_path / "s.pt")])
    assert result.exit_code == 2 and "foo" in result.output
    assert not list(tmp_path.iterdir())


def test_library_logs_are_one_line_and_pydicom_waits_for_verbose(capsys):
    import logging

    from tanl_guard.cli._logging import configure_logging

    def emit():
        try:
            raise NotImplementedError("Pillow does not support 'JPEG Extended' for samples with 12-bit precision")
        except NotImplementedError:
            logging.getLogger("pydicom.pixels.decoders.base").exception("decoder failed")
            logging.getLogger("urllib3.connectionpool").error("store error", exc_info=True)
        logging.getLogger("tanl_guard.guard").warning("ours")
        return capsys.readouterr().err

    try:
        configure_logging(0)
        quiet = emit()
        assert "decoder failed" not in quiet and "store error" in quiet and "ours" in quiet
        assert "Traceback" not in quiet
        configure_logging(1)
        verbose = emit()
        assert "decoder failed" in verbose and "Traceback" not in verbose
        configure_logging(2)
        assert "Traceback" in emit()
    finally:
        configure_logging(0)
