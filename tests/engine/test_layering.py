"""The pure engine imports nothing of the I/O parts: one-way dependencies, checked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tanl_guard

ENGINE = [
    "config", "scores", "threshold", "selection", "queue", "noise", "metrics", "covariance", "privacy", "view_spec",
    "detectors",
]
ALLOWED_THIRD_PARTY = {"torch", "numpy"}
IO_PARTS = {"encoders", "corpora", "dicom", "guard", "pipeline", "integrations", "cli", "demo", "node"}


def _imports(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(alias.name, 0) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add((node.module or "", node.level))
    return found


def test_engine_modules_import_only_torch_numpy_and_the_engine():
    root = Path(tanl_guard.__file__).parent
    files = [root / f"{name}.py" for name in ENGINE if (root / f"{name}.py").exists()]
    files += sorted((root / "detectors").glob("*.py"))
    for path in files:
        for module, level in _imports(path):
            top = module.split(".")[0]
            if level == 0:
                assert top in ALLOWED_THIRD_PARTY | {"__future__", "abc", "dataclasses", "typing", "math",
                                                     "hashlib", "collections", "os", "re", "secrets",
                                                     "pathlib"}, (path.name, module)
            else:
                assert top not in IO_PARTS, (path.name, module)


def test_import_tanl_guard_loads_no_io_package():
    code = (
        "import sys, tanl_guard\n"
        "heavy = [m for m in ('pydicom', 'mlflow', 'monai', 'open_clip', 'transformers', 'click', 'timm') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_monai_integration_reaches_neither_dicom_nor_pipeline():
    # The MONAI integration takes the view spec, the privacy helpers and the signed state file from below both.
    root = Path(tanl_guard.__file__).parent
    files = sorted((root / "integrations" / "monai").glob("*.py"))
    assert files
    for path in files:
        for module, level in _imports(path):
            if level == 0:
                parts = module.split(".")
            else:  # relative to tanl_guard/integrations/monai/
                parts = ["tanl_guard", "integrations", "monai"][: 3 - (level - 1)] + (module.split(".") if module else [])
            if parts[0] == "tanl_guard" and len(parts) > 1:
                assert parts[1] not in {"dicom", "pipeline"}, (path.name, module, level)
