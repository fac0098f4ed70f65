"""Package rules that code review alone would let slip."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "melanoma_cli"
HEAVY = {"tensorflow", "keras"}


def _heavy_imports(path: Path) -> list[str]:
    """`import tensorflow`, `from keras import ...` and the like in one file, as 'line: module'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0] in HEAVY]
    return found


def test_only_utils_tensorflow_imports_tensorflow_or_keras():
    offenders = {
        str(path.relative_to(PACKAGE)): imports
        for path in sorted(PACKAGE.rglob("*.py"))
        if (imports := _heavy_imports(path)) and path != PACKAGE / "utils" / "tensorflow.py"
    }
    assert offenders == {}
    assert _heavy_imports(PACKAGE / "utils" / "tensorflow.py")  # the rule sees real imports
