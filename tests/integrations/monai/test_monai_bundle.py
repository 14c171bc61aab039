# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The example bundle (examples/bundle): MONAI's ConfigParser parses it, builds the guard and the GuardedInferer,
and its SupervisedEvaluator runs end to end with the surrogate encoder and a tiny corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer
from monai_testing import CORPUS_WORDS, EVAL_KINDS, SALT, SIZE

from tanl_guard.integrations.mlflow import AuditLogger
from tanl_guard.integrations.monai import GuardedInferer, OODAuditHandler

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

# the session guard's corpus, as a bundle override expression
CORPUS_OVERRIDE = f"$Corpus.from_labels({list(CORPUS_WORDS)!r}, kind='noun')"


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
