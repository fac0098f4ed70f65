"""Where the bundled default model, its model card and the example images live in the package."""

from __future__ import annotations

from pathlib import Path

from melanoma_cli.runtime.run_folder import RunFolder
from melanoma_cli.utils.errors import MelanomaError

PACKAGE_DIR = Path(__file__).parent.parent
DEFAULT_MODEL_DIR = PACKAGE_DIR / "default_model"
MODEL_CARD = PACKAGE_DIR / "MODEL_CARD.md"
EXAMPLES_DIR = PACKAGE_DIR / "examples"


def default_model_dir() -> Path:
    """The bundled default model folder; a one-line error if the package ships none."""
    if not RunFolder(DEFAULT_MODEL_DIR).info.is_file():
        raise MelanomaError("no --model given and no bundled default model is installed")
    return DEFAULT_MODEL_DIR
