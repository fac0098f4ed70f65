"""The Keras engine: a run folder's model.keras, run by TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from melanoma_cli.runtime.classifier import BaseClassifier
from melanoma_cli.runtime.names import EngineName
from melanoma_cli.runtime.run_folder import load_model


@dataclass(kw_only=True)
class KerasClassifier(BaseClassifier):
    """A Keras model from a run folder (its model.json supplies the facts)."""

    network: Any
    engine: ClassVar[EngineName] = "keras"

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.network.predict_on_batch(images.astype(np.float32)))


def load_keras(model_file) -> KerasClassifier:
    """The Keras engine for a .keras file with model.json beside it."""
    loaded = load_model(model_file)
    return KerasClassifier(network=loaded.model, **BaseClassifier.facts(loaded.info, loaded.path))
