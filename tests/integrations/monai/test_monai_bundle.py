# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The example bundle (examples/bundle): the documented command runs it from a fresh shell on the sample data it
writes; MONAI's ConfigParser parses it, builds the guard and the GuardedInferer, and its SupervisedEvaluator runs
end to end with the session's surrogate guard."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer
from monai_testing import CORPUS_WORDS, EVAL_KINDS, SALT, SIZE

from tanl_guard.integrations.mlflow import AuditLogger
from tanl_guard.integrations.monai import GuardedInferer, HashedFilenames, OODAuditHandler

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

# the session guard's corpus, as a bundle override expression
CORPUS_OVERRIDE = f"$Corpus.from_labels({list(CORPUS_WORDS)!r}, kind='noun')"


REPO = Path(__file__).resolve().parents[3]


def _documented_command(doc: Path) -> list[str]:
    """The ``bash`` block of ``doc`` that runs the bundle: a ``cd`` into it, then the ``python -m monai.bundle`` line."""
    text = doc.read_text(encoding="utf-8")
    block = next(b for b in text.split("```bash")[1:] if "monai.bundle run" in b.split("```")[0]).split("```")[0]
    lines = [line.strip() for line in block.strip().splitlines()]
    assert lines[0] == "cd examples/bundle", f"{doc.name}: the bundle command runs inside the bundle folder"
    assert len(lines) == 2 and lines[1].startswith("python -m monai.bundle run ")
    return shlex.split(lines[1])


def test_documented_bundle_command_runs_from_a_fresh_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Exactly the command of docs/monai.md and the bundle's README, in a subprocess, in a copy of the bundle: it
    writes its sample data, and its predictions, verdicts, state and audit run, with no file name in any of them."""
    command = _documented_command(REPO / "docs" / "monai.md")
    assert command == _documented_command(REPO / "examples" / "bundle" / "README.md")
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "examples" / "bundle", bundle, ignore=shutil.ignore_patterns("data", "reference", "eval"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TANL_GUARD_SALT"))}
    done = subprocess.run(
        [sys.executable, *command[1:]], cwd=bundle, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"the bundle failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    assert "Setting logging properties based on config: configs/logging.conf" in done.stdout + done.stderr

    files = sorted((bundle / "data").glob("*.npy"))
    assert len(files) == 10 and len(list((bundle / "reference").glob("*.npy"))) == 16
    key_of = {str(bundle.resolve() / "data" / f.name): f.name for f in files}
    monkeypatch.delenv("TANL_GUARD_SALT", raising=False)  # a session fixture of other tests may have set it
    hashed = HashedFilenames()  # the per-installation salt the subprocess used (same config folder)
    name_of = {hashed({"image_meta_dict": {"filename_or_obj": [p]}})[0]["filename_or_obj"]: n for p, n in key_of.items()}

    out = bundle / "eval"
    texts = {name: (out / name).read_text(encoding="utf-8") for name in ("predictions.csv", "verdicts.jsonl")}
    assert not any(".npy" in t or "brain_" in t or "photo_" in t for t in texts.values()), "keys only, no file names"
    predictions = {row[0]: [float(v) for v in row[1:]] for row in csv.reader(texts["predictions.csv"].splitlines())}
    records = [json.loads(line) for line in texts["verdicts.jsonl"].splitlines()]
    assert set(predictions) == {r["study"] for r in records} == set(name_of)
    verdicts = {name_of[r["study"]]: r["verdict"] for r in records}
    # what docs/monai.md and the README promise for the defaults on the sample data
    assert verdicts == {n: "accept" if n.startswith("brain_") else "reject" for n in verdicts}
    for r in records:
        probabilities = predictions[r["study"]]
        if r["verdict"] == "accept":
            assert r["prediction"] == pytest.approx(probabilities, abs=1e-5) and sum(probabilities) == pytest.approx(1)
        else:
            assert all(v != v for v in probabilities) and "prediction" not in r  # NaN: no prediction exists
    assert (out / "guard_state.pt").is_file()

    mlflow = pytest.importorskip("mlflow")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tanl-guard").experiment_id])
    assert run.info.run_name == "bundle-inference" and run.info.status == "FINISHED"
    assert json.loads(run.data.params["id_labels"]) == ["brain MRI"]
    assert run.data.params["corpus"] == "dicom:group=findings" and run.data.params["threshold"] == "calibrated:0.8"
    assert run.data.metrics["screen/accepted"] == 5 and run.data.metrics["screen/rejected"] == 5


def test_bundle_parses_and_runs(guard, bundle_dir, eval_files, brain_slices, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TANL_GUARD_SALT", SALT)
    root = tmp_path / "bundle"
    shutil.copytree(bundle_dir, root)
    (root / "data").mkdir()
    (root / "reference").mkdir()
    for item in eval_files:
        shutil.copy(item["image"], root / "data")
    for i, image in enumerate(brain_slices[0::2]):
        np.save(root / "reference" / f"ref_{i}.npy", image)

    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1

    parser = ConfigParser()
    parser.read_config(root / "configs" / "inference.json")
    parser.read_meta(root / "configs" / "metadata.json")
    parser.update(
        {
            "bundle_root": str(root),
            "encoder": guard.encoder,  # the surrogate, already loaded by the session fixture
            "corpus": CORPUS_OVERRIDE,
            "corpus_cache": str(tmp_path / "cache"),
            "ood_threshold": str(guard.policy.threshold.value),
            "image_size": [SIZE, SIZE],
        }
    )
    assert isinstance(parser.get_parsed_content("audit_logger"), AuditLogger)
    parser["audit_logger"] = None  # the MLflow audit is tested in test_monai_handler.py

    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, GuardedInferer)
    assert isinstance(inferer.base_inferer, SimpleInferer)
    assert inferer.on_reject == "skip"
    built = inferer.guard
    assert built is parser.get_parsed_content("ood_guard")
    assert built.encoder is guard.encoder and built.corpus.sha256 == guard.corpus.sha256
    assert built.policy.threshold == guard.policy.threshold

    evaluator = parser.get_parsed_content("evaluator")
    assert isinstance(evaluator, SupervisedEvaluator)
    assert evaluator.inferer is inferer
    audit = [h for h in parser.get_parsed_content("handlers") if isinstance(h, OODAuditHandler)]
    assert len(audit) == 1 and audit[0].guard is built
    evaluator.run()

    handler = audit[0]
    assert handler.items_seen == len(EVAL_KINDS)
    assert handler.counts["reject"] == EVAL_KINDS.count("photo")
    assert (root / "eval" / "guard_state.pt").is_file()
    # the datalist is sorted by file name, which is the EVAL_KINDS order; postprocessing ran (softmax)
    assert [r["verdict"] for r in handler.last_records] == [
        "accept" if k == "brain" else "reject" for k in EVAL_KINDS[-len(handler.last_records) :]
    ]
    preds = evaluator.state.output
    assert all(torch.isnan(p["pred"]).all() != p["pred"].meta["ood_accepted"] for p in preds)
