# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""OODAuditHandler: a real SQLite MLflow store beside MONAI's MLFlowHandler on the same run, and a bare Engine."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor, decollate_batch
from monai.engines import SupervisedEvaluator
from monai.handlers import MLFlowHandler
from monai_testing import SALT, batch_of, eval_loader, make_network

from tanl_guard.guard import describe_guard
from tanl_guard.guard.state_file import load_guard_state
from tanl_guard.integrations.mlflow import AuditConfig, AuditLogger
from tanl_guard.integrations.monai import (
    BatchVerdicts,
    GuardedInferer,
    HashedFilenames,
    OODAuditHandler,
    items_from_meta,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::pandas.errors.Pandas4Warning",
    "ignore::sqlalchemy.exc.SADeprecationWarning",
    "ignore::FutureWarning",
    "ignore:NvImgCodecPydicomReader:UserWarning",
)

mlflow = pytest.importorskip("mlflow")


def _all_artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for info in client.list_artifacts(run_id, path):
        out.extend(_all_artifacts(client, run_id, info.path) if info.is_dir else [info.path])
    return out


def test_audit_beside_mlflow_handler_on_one_run(fresh_guard, eval_files, tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment, run_name = "tanl-guard-monai", "guarded-eval"
    audit = AuditLogger(
        AuditConfig(
            tracking_uri=uri,
            experiment=experiment,
            run_name=run_name,
            journal_dir=tmp_path / "journal",
            flush_timeout_s=60.0,
            backfill_on_start=False,
        )
    )
    state_path = tmp_path / "ckpt" / "guard_state.pt"
    handler = OODAuditHandler(audit, fresh_guard, checkpoint_every=3, state_path=state_path, salt=SALT)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=eval_loader(eval_files),
        network=make_network(),
        inferer=GuardedInferer(guard=fresh_guard),
    )
    handler.attach(evaluator)  # first: its run exists when MLFlowHandler looks for an active run of that name
    MLFlowHandler(
        tracking_uri=uri, experiment_name=experiment, run_name=run_name, iteration_log=False, close_on_complete=True
    ).attach(evaluator)
    evaluator.run()

    assert handler.items_seen == 6
    assert handler.counts == {"accept": 4, "reject": 2, "flagged": 0, "classified": 4}
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_name for r in runs] == [run_name], "both handlers logged to one run"
    run = runs[0]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    # MONAI's handler and ours share the run: its params beside ours
    assert run.data.params["max_epochs"] == "1"
    params = run.data.params
    described = describe_guard(fresh_guard, entry_point="monai")  # what `screen` logs for the same guard
    assert params["detector"] == described.params["detector"] == described.tags["detector"]
    assert params["threshold"] == str(fresh_guard.policy.threshold)
    assert json.loads(params["id_labels"]) == ["brain MRI"], "what the guard stands for is in the run"
    assert params["corpus_size"] == str(len(fresh_guard.corpus)) and params["reference_images"] == "5"
    assert params["encoder"] == fresh_guard.encoder.id and params["encoder"].startswith("surrogate")
    assert params["monai.on_reject"] == "skip" and params["monai.base_inferer"] == "SimpleInferer"
    assert run.data.tags["encoder.id"].startswith("surrogate")
    assert run.data.tags["corpus.sha256"] == fresh_guard.corpus.sha256
    assert run.data.tags["classifier.id"] == "DenseNet"
    metrics = run.data.metrics
    assert metrics["screen/accepted"] == 4 and metrics["screen/rejected"] == 2
    assert metrics["screen/reject_rate"] == pytest.approx(2 / 6)
    assert metrics["gate/threshold"] == pytest.approx(fresh_guard.policy.threshold.value)
    assert metrics["screen/classified"] == 4 and metrics["screen/flagged"] == 0
    steps = [m.step for m in client.get_metric_history(run_id, "screen/rejected")]
    assert steps == [3, 6], "stepped by items seen"
    assert [m.value for m in client.get_metric_history(run_id, "screen/rejected")] == [1, 2]

    artifacts = _all_artifacts(client, run_id)
    assert "audit/verdicts.json" in artifacts
    assert "state/final.pt" in artifacts, "where `tanl-guard state show RUN_ID` looks"
    assert {"state/step_000003.json", "state/step_000006.json"} <= set(artifacts)

    table_file = Path(client.download_artifacts(run_id, "audit/verdicts.json", str(tmp_path / "dl")))
    text = table_file.read_text(encoding="utf-8")
    assert "DOE" not in text and ".npy" not in text and str(tmp_path) not in text  # no raw paths, no names
    table = json.loads(text)
    rows = [dict(zip(table["columns"], values, strict=True)) for values in table["data"]]
    assert len(rows) == 6
    assert [r["verdict"] for r in rows] == ["accept", "reject", "accept", "reject", "accept", "accept"]
    assert all(re.fullmatch(r"[0-9a-f]{16}", r["study"]) for r in rows)
    assert len({r["study"] for r in rows}) == 6
    assert all(r["classified"] is (r["verdict"] == "accept") for r in rows)
    assert all(r["id_label"] == "brain MRI" for r in rows)
    # the classifier's output (logits at FORWARD_COMPLETED) beside each verdict it was computed for, none otherwise
    for r in rows:
        if r["classified"]:
            logits = json.loads(r["prediction"])
            assert len(logits) == 2 and r["predicted_class"] == max(range(2), key=logits.__getitem__)
        else:
            assert r.get("prediction") is None and r.get("predicted_class") is None

    snapshot = json.loads(
        Path(client.download_artifacts(run_id, "state/step_000006.json", str(tmp_path / "s"))).read_text()
    )
    assert snapshot["images_screened"] == fresh_guard.n_images
    # the run says what ran, as `screen` does; detector metrics at every batch, not only at checkpoints
    assert run.info.run_name == run_name and run.data.tags["mlflow.source.name"] == "tanl-guard monai"
    assert [m.step for m in client.get_metric_history(run_id, "gate/threshold")] == [3, 6]
    # the uploaded checkpoint is signed and restores the guard
    state = load_guard_state(state_path)
    assert state["n_images"] == fresh_guard.n_images
    fresh_guard.load_state_dict(state)


def test_bare_engine_without_mlflow_saves_state(fresh_guard, brain_slices, photos, tmp_path: Path):
    """Any Ignite engine: ITERATION_COMPLETED, guard found on the inferer, state saved at the end."""
    network = make_network()
    inferer = GuardedInferer(guard=fresh_guard, on_reject="nan")

    def step(engine: Engine, batch: dict[str, Any]) -> dict[str, Any]:
        with torch.no_grad():
            return {"pred": inferer(batch["image"], network)}

    engine = Engine(step)
    engine.inferer = inferer  # where the handler looks for the guard and the verdicts
    handler = OODAuditHandler(state_path=tmp_path / "state.pt", salt=SALT)
    handler.attach(engine)
    batch = {"image": batch_of([brain_slices[1], photos[0]])}
    engine.run([batch], max_epochs=1)

    assert handler.items_seen == 2
    assert handler.counts["accept"] == 1 and handler.counts["reject"] == 1
    assert [r["verdict"] for r in handler.last_records] == ["accept", "reject"]
    assert all(r["study"] is None for r in handler.last_records)  # no file names in the batch
    assert handler.last_records[1]["reason"].endswith("not classified")
    accepted, rejected = handler.last_records
    assert len(accepted["prediction"]) == 2 and accepted["predicted_class"] in (0, 1)
    assert "prediction" not in rejected, "a rejected item has no classifier output under on_reject='nan'"
    assert "series" not in accepted, "no empty DICOM fields in MONAI records"
    assert (tmp_path / "state.pt").is_file()
    assert handler.last_checkpoint_step == 2


def test_verdict_report_and_predictions_csv_join_on_hashed_keys(fresh_guard, eval_files, tmp_path: Path):
    """The handler's JSON-lines report and MONAI's ClassificationSaver (keyed by HashedFilenames) describe the same
    items under the same salted keys, with no file name in either; rejected items have NaN predictions."""
    import csv
    import math

    from monai.handlers import ClassificationSaver, from_engine

    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=eval_loader(eval_files),
        network=make_network(),
        inferer=GuardedInferer(guard=fresh_guard, on_reject="skip"),
    )
    report = tmp_path / "out" / "verdicts.jsonl"
    OODAuditHandler(salt=SALT, event="iteration", report_path=report).attach(evaluator)
    ClassificationSaver(
        output_dir=str(tmp_path / "out"), batch_transform=HashedFilenames(salt=SALT), output_transform=from_engine(["pred"])
    ).attach(evaluator)
    evaluator.run()

    records = [json.loads(line) for line in report.read_text().splitlines()]
    text = (tmp_path / "out" / "predictions.csv").read_text()
    assert "DOE" not in text and ".npy" not in text and "DOE" not in report.read_text()
    rows = {row[0]: [float(v) for v in row[1:]] for row in csv.reader(text.splitlines())}
    assert [r["verdict"] for r in records] == ["accept", "reject", "accept", "reject", "accept", "accept"]
    assert [r["step"] for r in records] == [3, 3, 3, 6, 6, 6]
    assert set(rows) == {r["study"] for r in records} and len(rows) == 6
    for r in records:
        if r["verdict"] == "accept":
            assert rows[r["study"]] == pytest.approx(r["prediction"], abs=1e-5)
        else:
            assert all(math.isnan(v) for v in rows[r["study"]]) and "prediction" not in r
    # a second run starts a fresh report
    evaluator.run()
    assert len(report.read_text().splitlines()) == 6


def test_engine_error_ends_the_run_failed_and_propagates(fresh_guard, brain_slices, tmp_path: Path):
    """An engine that raises leaves no RUNNING run and no journal lock behind, and its caller still sees the error."""
    audit = AuditLogger(AuditConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="failing",
                                    journal_dir=tmp_path / "journal", backfill_on_start=False))
    inferer = GuardedInferer(guard=fresh_guard)
    network = make_network()

    def step(engine: Engine, batch: dict[str, Any]) -> dict[str, Any]:
        if engine.state.iteration == 2:
            raise RuntimeError("the classifier ran out of memory")
        with torch.no_grad():
            return {"pred": inferer(batch["image"], network)}

    engine = Engine(step)
    engine.inferer = inferer
    OODAuditHandler(audit, salt=SALT).attach(engine)
    batch = {"image": batch_of([brain_slices[1]])}
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.run([batch, batch], max_epochs=1)

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
    detector = describe_guard(fresh_guard).params["detector"]
    assert run.info.status == "FAILED" and run.info.run_name.startswith(f"monai {detector} surrogate")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "gate/threshold")]
    assert steps == [1], "the detector's metrics after every batch, without checkpoints"
    assert not list((tmp_path / "journal").rglob("*.lock")), "the journal lock is released"


def test_handler_arguments():
    with pytest.raises(ValueError, match="checkpoint_every"):
        OODAuditHandler(checkpoint_every=-1, salt=SALT)
    with pytest.raises(ValueError, match="event"):
        OODAuditHandler(event="epoch", salt=SALT)


def test_verdicts_survive_decollation():
    """The handler reads the same verdicts before (batched meta) and after decollation (one meta per item)."""
    verdicts = BatchVerdicts(
        scores=torch.tensor([0.75, 0.25]),
        threshold=0.5,
        accepted=torch.tensor([True, False]),
        classified=torch.tensor([True, True]),
        flagged=torch.tensor([False, True]),
        predictions=("brain MRI", "brain MRI"),
        top_negatives=(("cat",), ("cat", "dog")),
        view_scores=torch.tensor([[0.75], [0.25]]),
        on_reject="pass",
    )
    pred = MetaTensor(torch.rand(2, 2))
    pred.meta = verdicts.to_meta()
    pred.is_batch = True
    expected = verdicts.items()
    assert items_from_meta(pred.meta) == expected  # values exact in float32
    items = decollate_batch({"pred": pred})
    assert items_from_meta([item["pred"].meta for item in items]) == expected
    assert items_from_meta({"filename_or_obj": ["a"]}) is None
