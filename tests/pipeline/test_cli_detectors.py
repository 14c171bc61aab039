"""``tanl-guard screen --detector tanl+knn`` end to end on the real demo folder and the surrogate encoder."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tanl_guard.cli.main import cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def test_fused_detector_through_screen_state_and_resume(demo_folder, corpus_file, tmp_path):
    args = ["screen", str(demo_folder.studies), "--encoder", "surrogate", "--id-label", "brain MRI",
            "--reference", str(demo_folder.references), "--corpus", str(corpus_file), "--detector", "tanl+knn",
            "--cache-dir", str(tmp_path / "cache"), "--state", str(tmp_path / "state.pt"), "--batch-size", "8",
            "--no-audit", "--json", "--checkpoint-every", "5"]
    runner = CliRunner()
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    scored = [line for line in lines if line["id_score"] is not None]
    assert len(lines) == 19 and scored
    for line in scored:  # both gates' scores and thresholds, at the study and at every readable series
        assert line["threshold"] == 0.5
        assert 0 <= line["label_score"] <= 1 and 0 <= line["feature_score"] <= 1
        assert line["feature_threshold"] > 0 and line["label_threshold"] > 0
        for series in line["series"]:
            if series["id_score"] is not None:
                assert {"label_score", "feature_score", "refused_by"} <= set(series)
        if line["verdict"] == "reject":
            assert line["refused_by"] and "refused by" in line["reason"]
    assert any(line["verdict"] == "accept" for line in scored) and any(line["verdict"] == "reject" for line in scored)

    shown = json.loads(runner.invoke(cli, ["state", "show", str(tmp_path / "state.pt")]).output)
    assert shown["detector"] == "tanl+knn" and shown["studies_done"] == 18
    assert shown["pos_queue"] > 0 and shown["feature_gate"]["detector"] == "knn"
    calibration = shown["feature_gate"]["calibration"]
    # the demo's references: one subfolder per volume, each a source held out in turn
    assert calibration["method"] == "leave-one-source-out" and calibration["folds"] == 7

    again = runner.invoke(cli, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == result.stdout.splitlines()


def test_detector_and_policy_choices_come_from_the_registries():
    from tanl_guard.guard import STUDY_POLICIES, detector_names

    help_text = CliRunner().invoke(cli, ["screen", "--help"]).output
    for name in (*detector_names(), *STUDY_POLICIES):
        assert name in help_text
