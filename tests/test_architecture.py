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


# ARCHITECTURE.md's import rule: what each top-level part of the package may import
# (besides itself and `melanoma_cli.__version__`). Training and inference are siblings.
LOWER = {"utils"}
ALLOWED = {
    "utils": set(),
    "stats": LOWER,
    "config": LOWER | {"models.backbones.registry"},
    "data": LOWER | {"config"},
    "models": LOWER | {"config"},
    "runtime": LOWER | {"config", "models"},
    "training": LOWER | {"config", "data", "models", "runtime", "stats"},
    "inference": LOWER | {"config", "data", "models", "runtime", "stats"},
    "web": LOWER | {"config", "data", "models", "runtime", "stats", "inference"},
    "cli": LOWER | {"config", "data", "models", "runtime", "stats", "inference", "training", "web"},
}


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _package_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module below melanoma_cli) of every absolute import of the package in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name.removeprefix("melanoma_cli."))
                  for name in names if name.startswith("melanoma_cli.")]
    return found


def _allowed(part: str, module: str) -> bool:
    return module.split(".")[0] == part or any(
        module == rule or module.startswith(rule + ".") for rule in ALLOWED[part])


def test_imports_flow_one_way():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py")) if _part(path) in ALLOWED
        for line, module in _package_imports(path) if not _allowed(_part(path), module)
    ]
    assert offenders == []
    parts = {_part(path) for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert parts == set(ALLOWED)  # a new part of the package gets a rule here


def test_the_import_rule_catches_an_upward_import(tmp_path):
    assert not _allowed("data", "training.train") and not _allowed("training", "inference.prediction")
    assert _allowed("inference", "runtime.loading") and _allowed("config", "models.backbones.registry")
    assert not _allowed("config", "models.build")


def test_importing_any_module_builds_no_keras():
    """Importing a module never imports TensorFlow or Keras: only calling into it may."""
    import subprocess
    import sys

    modules = sorted(".".join(("melanoma_cli", *p.relative_to(PACKAGE).with_suffix("").parts))
                     for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
