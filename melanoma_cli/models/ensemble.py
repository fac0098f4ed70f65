"""The fine-tuned network averaged with a linear probe on the backbone's frozen features.

The linear probe is one softmax layer on the pretrained backbone's pooled features, never
fine-tuned (training/linear_probe.py fits it by logistic regression). Fine-tuning on a few
collections teaches a network those collections as well as the lesions; the frozen features
keep only what pretraining taught, so averaging the two holds up better on other clinics' images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from melanoma_cli.config import ModelConfig
from melanoma_cli.models.color_constancy import shades_of_gray
from melanoma_cli.utils.tensorflow import import_keras

PROBE = "linear_probe"
ENSEMBLE = "ensemble"


def _stages_backbone(backbone: Any) -> Any:
    """EfficientNet-Lite0 returning the feature map of each of its stages and of its head."""
    from melanoma_cli.models.backbones.efficientnet_lite0 import stage_output_layers

    keras = import_keras()
    maps = [backbone.get_layer(name).output for name in stage_output_layers()]
    return keras.Model(backbone.input, [*maps, backbone.output], name=backbone.name)


def feature_extractor(config: ModelConfig, image_size: int) -> Any:
    """Raw 0-255 RGB of `image_size` -> the pretrained backbone's pooled features, frozen: of its
    output (`linear_probe_features: top`), or of every stage's output, concatenated (`stages`)."""
    from melanoma_cli.models.backbones.registry import build_backbone

    keras = import_keras()
    inputs = x = keras.Input((image_size, image_size, 3), name="image")
    if config.color_constancy == "shades_of_gray":
        x = shades_of_gray(name="shades_of_gray")(x)
    backbone = build_backbone(config.backbone, config.weights, image_size)
    backbone.trainable = False
    if config.linear_probe_features == "stages":
        maps = _stages_backbone(backbone)(x, training=False)
        pooled = [keras.layers.GlobalAveragePooling2D(name=f"pool_{i}")(m) for i, m in enumerate(maps)]
        x = keras.layers.Concatenate(name="pool")(pooled)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(x, training=False))
    return keras.Model(inputs, x, name="frozen_features")


def build_probe(config: ModelConfig, image_size: int, kernel: np.ndarray, bias: np.ndarray) -> Any:
    """The linear probe as a Keras model: frozen features -> softmax layer with `kernel`, `bias`."""
    keras = import_keras()
    extractor = feature_extractor(config, image_size)
    head = keras.layers.Dense(kernel.shape[1], activation="softmax", name="probabilities",
                              dtype="float32")
    outputs = head(extractor.output)
    head.set_weights([kernel, bias])
    probe = keras.Model(extractor.input, outputs, name=PROBE)
    probe.trainable = False
    return probe


def build_ensemble(fine_tuned: Any, probe: Any) -> Any:
    """One model whose probabilities are the mean of the two members', each with its own backbone
    (any backbone; for EfficientNet-Lite0, models/shared_trunk.py computes the same in one pass)."""
    keras = import_keras()
    inputs = keras.Input(fine_tuned.inputs[0].shape[1:], name="image")
    outputs = keras.layers.Average(name="mean_probabilities")([fine_tuned(inputs), probe(inputs)])
    return keras.Model(inputs, outputs, name=ENSEMBLE)
