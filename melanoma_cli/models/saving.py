"""Reading a saved Keras model: one loader for every caller, with the package's custom layers."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from melanoma_cli.models.color_constancy import LAYER_NAME, layer_class
from melanoma_cli.utils.errors import MelanomaError, first_line
from melanoma_cli.utils.tensorflow import import_keras


def custom_objects() -> dict[str, type]:
    """The package's layers by the names a saved model gives them."""
    return {LAYER_NAME: layer_class()}


def load_network(path: Path, *, compile: bool = False, what: str = "model file") -> Any:
    """The Keras model saved at `path` (with its optimizer state when `compile`); a one-line error
    naming the file if it cannot be loaded, saying "damaged" only when the archive is."""
    keras = import_keras()
    try:
        return keras.models.load_model(path, compile=compile, custom_objects=custom_objects())
    except Exception as exc:  # Keras raises many types
        reason = first_line(exc)
        if not Path(path).is_file():
            reason = "no such file"
        elif not zipfile.is_zipfile(path):  # Keras would call it "not found"
            reason = "damaged or not a Keras model (a .keras file is a zip archive)"
        raise MelanomaError(f"{what} '{path}' cannot be loaded: {reason}") from exc
