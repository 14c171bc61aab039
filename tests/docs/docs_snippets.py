# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Reading the code blocks of the Markdown docs, for the test that runs them (see ``test_docs_snippets.py``).

The convention, for every ``README.md``, ``docs/**/*.md`` and ``examples/**/*.md``:

- Every fenced block names its language. ```` ```python ```` blocks are executed; every other language
  (``bash``/``console`` for commands, ``text`` for program output and layouts, ``json``, ...) is only read.
- The ``python`` blocks of one document run in order, in one fresh namespace, in an empty temporary working
  directory, so a later block may use what an earlier one defined (as a reader going down the page would).
- ``<!-- docs-test: setup`` ... ``-->``: hidden Python run at that point, for the inputs a snippet takes as given
  (``images``, ``records``, a folder of studies): keep it short and real (packaged data, the surrogate encoder).
- ``<!-- docs-test: check`` ... ``-->``: hidden Python run at that point that asserts what the prose claims about
  the output (counts, measured figures), so the text cannot drift from what the code does.
- ``<!-- docs-test: skip REASON -->`` on the line before a block: the block is not run. Only for what cannot run
  here (user-supplied weights, a GPU, a corpus that takes minutes to embed); the reason is required and shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "read_blocks", "documents", "RUN_LANGUAGE"]

RUN_LANGUAGE = "python"
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b\s*(?P<reason>.*?)\s*-->\s*$")
_HIDDEN = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>setup|check)\s*$")
_DIRECTIVE = re.compile(r"<!--\s*docs-test:")


@dataclass(frozen=True)
class Block:
    """One code block of a document.

    Attributes:
        language: the fence's language (``""`` when the fence names none), or ``"setup"``/``"check"`` for a hidden
            block.
        source: the code, dedented to the fence's indentation.
        line: the 1-based line of the first code line in the document.
        skip: the reason given by a ``docs-test: skip`` directive, or None.
    """

    language: str
    source: str
    line: int
    skip: str | None = None

    @property
    def runs(self) -> bool:
        """Whether the test executes this block."""
        return self.language in (RUN_LANGUAGE, "setup", "check") and self.skip is None


def read_blocks(text: str, name: str = "<doc>") -> list[Block]:
    """The fenced and hidden setup blocks of a Markdown text, in document order.

    Args:
        text: the Markdown source.
        name: the document's name, for error messages.

    Raises:
        ValueError: an unclosed fence or setup comment, a skip without a reason or not followed by a block, or an
            unknown ``docs-test`` directive.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    pending_skip: tuple[str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if (m := _SKIP.match(line)) is not None:
            if not m["reason"]:
                raise ValueError(f"{name}:{i + 1}: 'docs-test: skip' needs a reason")
            pending_skip = (m["reason"], i + 1)
            i += 1
            continue
        if (m := _HIDDEN.match(line)) is not None:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->"), None)
            if end is None:
                raise ValueError(f"{name}:{i + 1}: 'docs-test: {m['kind']}' comment is never closed by a '-->' line")
            blocks.append(Block(m["kind"], "\n".join(lines[i + 1 : end]) + "\n", i + 2))
            i = end + 1
            continue
        if _DIRECTIVE.search(line):
            raise ValueError(f"{name}:{i + 1}: unknown docs-test directive {line.strip()!r} (setup, check or skip)")
        if (m := _FENCE.match(line)) is not None:
            indent, fence = m["indent"], m["fence"]
            close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
            end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), None)
            if end is None:
                raise ValueError(f"{name}:{i + 1}: code fence is never closed")
            body = [ln[len(indent) :] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1 : end]]
            skip = None
            if pending_skip is not None:
                skip, pending_skip = pending_skip[0], None
            blocks.append(Block(m["info"].lower(), "\n".join(body) + "\n", i + 2, skip))
            i = end + 1
            continue
        if pending_skip is not None and line.strip():
            raise ValueError(f"{name}:{pending_skip[1]}: 'docs-test: skip' must stand right before a code block")
        i += 1
    if pending_skip is not None:
        raise ValueError(f"{name}:{pending_skip[1]}: 'docs-test: skip' is not followed by a code block")
    return blocks


def documents(root: Path) -> list[Path]:
    """The Markdown documents of the repository whose code blocks are checked: README.md, docs/, examples/.

    Args:
        root: the repository root.
    """
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    for folder in ("docs", "examples"):
        found += sorted((root / folder).rglob("*.md"))
    return found
