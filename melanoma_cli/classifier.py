"""An engine-neutral image classifier: what evaluate and predict need from a model, and the loader.

Commands depend only on `Classifier`; a second engine (e.g. LiteRT) is another implementation
picked in `load_classifier`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from melanoma_cli.errors import MelanomaError
from melanoma_cli.runs import MODEL_FILE, load_model

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"


class Classifier(Protocol):
    """A model with its class names, input size and melanoma decision rule."""

    classes: list[str]
    image_size: int
    melanoma_class: str | None
    melanoma_threshold: float | None
    source: Path

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (n, len(classes)) for uint8 RGB images (n, size, size, 3), n >= 0."""
        ...


@dataclass
class KerasClassifier:
    """A Keras model from a run folder (its model.json supplies the facts)."""

    network: Any
    classes: list[str]
    image_size: int
    melanoma_class: str | None
    melanoma_threshold: float | None
    source: Path

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of uint8 RGB images (normalisation is in the model)."""
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.asarray(self.network.predict_on_batch(images.astype(np.float32)))


def load_classifier(model: Path | None) -> Classifier:
    """Load `--model` (a run folder or a .keras file with model.json beside it).

    Without one, the bundled default model in melanoma_cli/default_model/ is used if installed.
    """
    if model is None:
        if not (DEFAULT_MODEL_DIR / MODEL_FILE).is_file():
            raise MelanomaError("no --model given and no bundled default model is installed")
        model = DEFAULT_MODEL_DIR
    loaded = load_model(model)
    info = loaded.info
    return KerasClassifier(
        network=loaded.model,
        classes=list(info.classes),
        image_size=info.image_size,
        melanoma_class=info.melanoma_class if info.melanoma_class in info.classes else None,
        melanoma_threshold=info.melanoma_threshold,
        source=loaded.path,
    )
