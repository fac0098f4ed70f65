"""`build_model`: the configurable CNN, or a pretrained backbone with a new classification head."""

from __future__ import annotations

from melanoma_cli.config import ModelConfig
from melanoma_cli.models.color_constancy import shades_of_gray
from melanoma_cli.utils.tensorflow import import_keras


def _conv_blocks(x, config: ModelConfig):
    keras = import_keras()
    layers = keras.layers
    for block, filters in enumerate(config.filters):
        for conv in range(config.convs_per_block):
            name = f"block{block}_conv{conv}"
            x = layers.Conv2D(filters, config.kernel_size, padding="same",
                              use_bias=not config.batch_norm, name=name)(x)
            if config.batch_norm:
                x = layers.BatchNormalization(name=f"{name}_bn")(x)
            x = layers.ReLU(name=f"{name}_relu")(x)
        pool = layers.MaxPooling2D if config.pooling == "max" else layers.AveragePooling2D
        x = pool(2, name=f"block{block}_pool")(x)
        if config.block_dropout > 0:
            x = layers.Dropout(config.block_dropout, name=f"block{block}_dropout")(x)
    return x


def build_model(config: ModelConfig, num_classes: int, image_size: int):
    """A Keras model taking raw 0-255 RGB images of `image_size` and returning class probabilities.

    The input normalisation lives inside the model, so a saved model needs no preprocessing.
    """
    keras = import_keras()
    layers = keras.layers
    inputs = x = keras.Input((image_size, image_size, 3), name="image")
    if config.color_constancy == "shades_of_gray":
        x = shades_of_gray(name="shades_of_gray")(x)
    if config.backbone == "none":
        x = layers.Rescaling(1.0 / 255, name="rescale")(x)
        x = _conv_blocks(x, config)
    else:
        from melanoma_cli.models.backbones.registry import build_backbone

        backbone = build_backbone(config.backbone, config.weights, image_size)
        x = backbone(x, training=False)  # BatchNorm stays in inference mode when fine-tuned
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if config.dense_units > 0:
        x = layers.Dropout(config.dropout, name="dense_dropout")(x)
        x = layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(config.dropout, name="head_dropout")(x)
    # float32 probabilities under mixed precision too (softmax and the loss need the range)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"melanoma_{config.backbone}")
