"""The ``tanl-guard`` command line, run through click's CliRunner on the real demo folder and surrogate encoder."""

from __future__ import annotations

import json

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
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["screen", str(demo_folder.studies), "--id-label", "brain MRI", "--no-audit"])
    assert result.exit_code == 1
    assert "biomedclip" in result.output and "surrogate" in result.output


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
    summary = runner.invoke(cli, ["audit", "summary", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                  "--json"])
    assert summary.exit_code == 0, summary.output
    assert "Demo^Volunteer" not in summary.output and "DEMO-" not in summary.output

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
