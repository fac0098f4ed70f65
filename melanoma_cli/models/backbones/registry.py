"""Pretrained backbones by name: each takes raw 0-255 RGB and returns a feature map."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from melanoma_cli.utils.errors import MelanomaError, first_line
from melanoma_cli.utils.tensorflow import import_keras

BACKBONE_LAYER = "backbone"

# name -> (keras.applications constructor, does the model normalise its own input?)
KERAS_APPLICATIONS = {
    "mobilenet": ("MobileNet", False),
    "mobilenet_v2": ("MobileNetV2", False),
    "mobilenet_v3_small": ("MobileNetV3Small", True),
    "mobilenet_v3_large": ("MobileNetV3Large", True),
    "efficientnet_b0": ("EfficientNetB0", True),
    "efficientnetv2_b0": ("EfficientNetV2B0", True),
}
# Every backbone name (the config's `model.backbone` accepts these and "none")
Backbone = Literal["efficientnet_lite0", *KERAS_APPLICATIONS]


def _weights_argument(weights: str) -> str | None:
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    if not Path(weights).is_file():
        raise MelanomaError(f"config key 'model.weights': file '{weights}' does not exist")
    return weights


def _keras_application(name: str, weights: str | None, image_size: int):
    keras = import_keras()
    constructor_name, normalises_itself = KERAS_APPLICATIONS[name]
    constructor = getattr(keras.applications, constructor_name)
    kwargs = {"include_top": False, "weights": weights, "input_shape": (image_size, image_size, 3)}
    if name == "mobilenet":
        kwargs["alpha"] = 0.25
    try:
        base = constructor(**kwargs)
    except Exception as exc:  # offline downloads fail with URLError, OSError or ValueError
        if weights == "imagenet":
            raise MelanomaError(
                f"could not get ImageNet weights for '{name}': keras.applications downloads them "
                "once (needs internet; cached in ~/.keras/models). Offline, use "
                "model.backbone: efficientnet_lite0, whose weights ship with the package"
            ) from exc
        raise MelanomaError(f"cannot build backbone '{name}': {first_line(exc)}") from exc
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs if normalises_itself else keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    return keras.Model(inputs, base(x), name=BACKBONE_LAYER)


def build_backbone(name: Backbone, weights: str, image_size: int):
    """A feature extractor `name` as one Keras layer named 'backbone'."""
    weights_argument = _weights_argument(weights)
    if name == "efficientnet_lite0":
        from melanoma_cli.models.backbones.efficientnet_lite0 import build_efficientnet_lite0

        import_keras()
        try:
            return build_efficientnet_lite0(
                (image_size, image_size, 3), include_top=False, weights=weights_argument,
                name=BACKBONE_LAYER,
            )
        except ValueError as exc:
            raise MelanomaError(f"cannot load EfficientNet-Lite0 weights: {exc}") from exc
    if name in KERAS_APPLICATIONS:
        return _keras_application(name, weights_argument, image_size)
    raise MelanomaError(f"config key 'model.backbone': unknown backbone '{name}'")


def _leaf_layers(model, keras):
    """Every layer inside `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer, keras)
        else:
            yield layer


def set_trainable(model, backbone_name: Backbone, trainable: str) -> None:
    """Choose what trains: 'head' (backbone frozen), 'all', or the top N backbone blocks.

    For efficientnet_lite0 a block is an MBConv block (16 in all, plus the head conv); for the
    keras.applications families N counts layers. BatchNorm layers always stay frozen.
    """
    keras = import_keras()
    backbone = model.get_layer(BACKBONE_LAYER)
    if trainable == "head":
        backbone.trainable = False
        return
    backbone.trainable = True
    layers = list(_leaf_layers(backbone, keras))
    if trainable == "all":
        chosen = set(map(id, layers))
    else:
        count = int(trainable)
        if backbone_name == "efficientnet_lite0":
            from melanoma_cli.models.backbones.efficientnet_lite0 import BLOCK_COUNT, layers_from_block

            start = max(0, BLOCK_COUNT - count)
            chosen = set(map(id, layers_from_block(backbone, start)))
        else:
            weighted = [layer for layer in layers if layer.weights]
            chosen = set(map(id, weighted[-count:])) if count else set()
    for layer in layers:
        is_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = id(layer) in chosen and not is_norm
