"""An engine-neutral image classifier: what evaluate and predict need from a model, and the loader.

Commands depend only on `Classifier`. Two engines implement it: Keras (model.keras, needs
TensorFlow) and LiteRT (the model's .tflite export, no TensorFlow); `load_classifier` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from melanoma_cli.classifier_base import BaseClassifier
from melanoma_cli.errors import MelanomaError
from melanoma_cli.litert_engine import INSTALL_HINT, interpreter_class, load_litert
from melanoma_cli.model_card import default_model_dir
from melanoma_cli.runs import ModelInfo, load_model, resolve_model_path

Engine = Literal["auto", "keras", "litert"]


class Classifier(Protocol):
    """A model with its class names, input size and melanoma decision rule."""

    classes: list[str]
    image_size: int
    melanoma_class: str | None
    melanoma_threshold: float | None
    source: Path
    engine: str

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (n, len(classes)) for uint8 RGB images (n, size, size, 3), n >= 0."""
        ...


@dataclass(kw_only=True)
class KerasClassifier(BaseClassifier):
    """A Keras model from a run folder (its model.json supplies the facts)."""

    network: Any
    engine: ClassVar[str] = "keras"

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.network.predict_on_batch(images.astype(np.float32)))


def tflite_file(model_file: Path, info: ModelInfo) -> Path | None:
    """The model's LiteRT flatbuffer: the file itself if given, else its recorded export if present."""
    if model_file.suffix == ".tflite":
        return model_file
    name = info.exports.get("tflite")
    path = model_file.parent / name if name else None
    return path if path is not None and path.is_file() else None


def choose_engine(requested: Engine, tflite: Path | None, litert_installed: bool) -> str:
    """'keras' or 'litert' for `--engine`: auto prefers LiteRT when there is an export to run."""
    if requested == "litert":
        if tflite is None:
            raise MelanomaError("this model has no LiteRT export: create one with 'melanoma export "
                                "--model RUN --format tflite', or use --engine keras")
        if not litert_installed:
            raise MelanomaError(f"the LiteRT engine needs the ai-edge-litert package ({INSTALL_HINT}), "
                                "or use --engine keras")
        return "litert"
    if requested == "auto" and tflite is not None and litert_installed:
        return "litert"
    return "keras"


def load_classifier(model: Path | None, engine: Engine = "auto",
                    note: Callable[[str], None] | None = None) -> Classifier:
    """Load `--model` (a run folder, or a .keras or .tflite file with model.json beside it).

    Without one, the bundled default model in melanoma_cli/default_model/ is used if installed.
    `engine` auto runs the LiteRT export when there is one and ai-edge-litert is installed, else
    Keras; `note` hears why an existing export was not used.
    """
    if model is None:
        model = default_model_dir()
    model_file, info_file = resolve_model_path(Path(model))
    info = ModelInfo.load(info_file)
    tflite = tflite_file(model_file, info)
    if model_file.suffix == ".tflite":
        if engine == "keras":
            raise MelanomaError(f"the Keras engine needs a .keras model, not '{model_file}'")
        engine = "litert"
    interpreter = interpreter_class() if tflite is not None and engine != "keras" else None
    if choose_engine(engine, tflite, interpreter is not None) == "litert":
        return load_litert(tflite, info, interpreter)
    if tflite is not None and engine == "auto" and note is not None:
        note(f"ai-edge-litert is not installed: using Keras, which starts slower ({INSTALL_HINT})")
    loaded = load_model(model_file)
    return KerasClassifier(network=loaded.model, **BaseClassifier.facts(loaded.info, loaded.path))
