"""Print pip constraints that pin every direct dependency to its declared minimum.

Reads `dependencies` from pyproject.toml, and the optional dependencies of the extras named on
the command line, and prints `name==minimum` (with the requirement's environment marker) for
each one that has a lower bound (`>=` or `==`). CI installs the project with them:

    python .ci/minimum_constraints.py dev web > minimum.txt
    pip install -c minimum.txt ".[dev,web]"

It needs `packaging` (pytest brings it).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def minimum_pins(project: dict, extras: list[str]) -> list[str]:
    """`name==minimum[; marker]` for each requirement of the project and of `extras` that has one."""
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"pyproject.toml has no extra {', '.join(unknown)}")
    texts = [*project["dependencies"], *(text for extra in extras for text in optional[extra])]
    pins = []
    for requirement in map(Requirement, texts):
        floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
        if floors:
            marker = f"; {requirement.marker}" if requirement.marker else ""
            pins.append(f"{requirement.name}=={max(floors)}{marker}")
    return pins


def main() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    print("\n".join(minimum_pins(project, sys.argv[1:])))


if __name__ == "__main__":
    main()
