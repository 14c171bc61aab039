# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Every Python snippet of the docs runs as written, so none can rot.

Discovered at collection time from README.md, docs/**/*.md and examples/**/*.md (the convention is in
``docs_snippets.py``): each document's ``python`` blocks and hidden ``docs-test: setup`` blocks run in order in one
fresh namespace inside an empty temporary working directory (hidden ``setup``/``check`` blocks included), with a fixed salt and no MLflow URI from the
environment; blocks marked ``docs-test: skip REASON`` are not run. Snippets use the real surrogate encoder and data
that ship in installed packages, never downloads.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from docs_snippets import RUN_LANGUAGE, documents, read_blocks

ROOT = Path(__file__).resolve().parents[2]
DOCS = documents(ROOT)


def _name(doc: Path) -> str:
    return doc.relative_to(ROOT).as_posix()


def _runs_python(doc: Path) -> bool:
    return any(b.language == RUN_LANGUAGE for b in read_blocks(doc.read_text(encoding="utf-8"), _name(doc)))


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_code_fence_names_its_language(doc: Path):
    """An unnamed fence could hide Python that never runs: ``python`` runs, ``bash``/``text``/``json``... do not."""
    blocks = read_blocks(doc.read_text(encoding="utf-8"), _name(doc))
    unnamed = [b.line - 1 for b in blocks if not b.language]
    assert not unnamed, f"{_name(doc)}: code fences without a language at lines {unnamed} (python, bash, text, json...)"


@pytest.mark.parametrize("doc", [d for d in DOCS if _runs_python(d)], ids=_name)
def test_python_snippets_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = _name(doc)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TANL_GUARD_SALT", "tanl-guard-docs-test")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    blocks = read_blocks(doc.read_text(encoding="utf-8"), name)
    if not any(b.runs for b in blocks if b.language == RUN_LANGUAGE):
        pytest.skip("; ".join(f"{name}:{b.line}: {b.skip}" for b in blocks if b.skip))
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        if not block.runs:
            continue
        # Padded so that tracebacks point at the document's own lines.
        code = compile("\n" * (block.line - 1) + block.source, str(doc), "exec")
        try:
            exec(code, namespace)
        except NameError as exc:
            pytest.fail(
                f"{name}:{block.line}: {exc}. A snippet may only use names that an earlier block of the same document "
                "defines: define it there, or in a hidden '<!-- docs-test: setup ... -->' block (tests/docs/"
                f"docs_snippets.py)\n{traceback.format_exc()}",
                pytrace=False,
            )


def test_read_blocks_convention():
    text = "\n".join(
        [
            "# Title",
            "<!-- docs-test: setup",
            "x = 1",
            "-->",
            "```python",
            "y = x + 1",
            "```",
            "<!-- docs-test: skip needs weights -->",
            "```python",
            "raise SystemExit",
            "```",
            "- a list item:",
            "  ```bash",
            "  tanl-guard screen .",
            "  ```",
            "```",
            "no language",
            "```",
            "<!-- docs-test: check",
            "assert y == 2",
            "-->",
        ]
    )
    blocks = read_blocks(text)
    assert [(b.language, b.line, b.skip, b.runs) for b in blocks] == [
        ("setup", 3, None, True),
        ("python", 6, None, True),
        ("python", 10, "needs weights", False),
        ("bash", 14, None, False),
        ("", 17, None, False),
        ("check", 20, None, True),
    ]
    assert blocks[3].source == "tanl-guard screen .\n"
    for bad, match in [
        ("<!-- docs-test: skip -->\n```python\n```", "needs a reason"),
        ("<!-- docs-test: skip why -->\ntext\n```python\n```", "right before a code block"),
        ("<!-- docs-test: setup\nx = 1\n", "never closed"),
        ("```python\nx = 1\n", "never closed"),
        ("<!-- docs-test: run -->", "unknown docs-test directive"),
    ]:
        with pytest.raises(ValueError, match=match):
            read_blocks(bad)
