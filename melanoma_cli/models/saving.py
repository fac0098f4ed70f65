"""Reading a saved Keras model: one loader for every caller, with the package's custom layers."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
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


def _float32_config(value: Any) -> Any:
    """A Keras config with every dtype policy and tensor dtype of float16 made float32."""
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("class_name") == "DTypePolicy":
        return "float32"
    return {key: "float32" if key == "dtype" and item == "float16" else _float32_config(item)
            for key, item in value.items()}


def float32_copy(model: Any) -> Any:
    """`model` with float32 layers throughout and the same weights (the model itself when it has
    no other policy): what a network fine-tuned in mixed precision ships as."""
    keras = import_keras()
    if all(layer.dtype_policy.name == "float32" for layer in all_layers(model)):
        return model
    with keras.utils.custom_object_scope(custom_objects()):
        copy = model.__class__.from_config(_float32_config(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def all_layers(model: Any) -> Iterator[Any]:
    """Every layer of `model`, inside nested models too."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)
