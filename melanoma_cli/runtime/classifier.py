"""The engine-neutral classifier: what predict, evaluate and explain need from a model.

Commands depend only on `Classifier`. Engines (Keras, LiteRT) subclass `BaseClassifier`, which
holds the model's facts from model.json and the batch contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from melanoma_cli.runtime.names import EngineName
from melanoma_cli.runtime.run_folder import ModelInfo


class Classifier(Protocol):
    """A model with its class names, input size and melanoma decision rule."""

    classes: list[str]
    image_size: int
    melanoma_class: str | None
    melanoma_threshold: float | None
    melanoma_threshold_tta: float | None  # the operating point set with test-time augmentation
    source: Path
    engine: EngineName

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (n, len(classes)) for uint8 RGB images (n, size, size, 3), n >= 0."""
        ...


@dataclass
class BaseClassifier:
    """Class names, input size and melanoma rule of a model; engines supply `_probabilities`."""

    classes: list[str]
    image_size: int
    melanoma_class: str | None
    melanoma_threshold: float | None
    source: Path
    engine: ClassVar[EngineName]
    melanoma_threshold_tta: float | None = None

    @staticmethod
    def facts(info: ModelInfo, source: Path) -> dict[str, Any]:
        """Constructor arguments taken from a model.json."""
        return {
            "classes": list(info.classes),
            "image_size": info.image_size,
            "melanoma_class": info.melanoma_class if info.melanoma_class in info.classes else None,
            "melanoma_threshold": info.melanoma_threshold,
            "melanoma_threshold_tta": info.melanoma_threshold_tta,
            "source": source,
        }

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of uint8 RGB images (normalisation is in the model)."""
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self._probabilities(images)

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError
