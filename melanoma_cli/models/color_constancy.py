"""Shades-of-Gray colour constancy as a Keras layer, so that every engine applies it.

Each image's illuminant is estimated per channel as the Minkowski p-norm mean of its pixels,
e_c = mean(I_c^p)^(1/p), and each channel is scaled by mean(e) / e_c: the image is seen under
a neutral light, whatever the dermoscope's lamp and camera made of it (p=6 is the usual choice
for dermoscopy; p=1 is grey-world, p=inf max-RGB).
"""

from __future__ import annotations

import functools
from typing import Any

from melanoma_cli.utils.tensorflow import import_keras

LAYER_NAME = "melanoma_cli>ShadesOfGray"  # its name in a saved model


@functools.cache
def layer_class() -> type:
    """The Keras layer class, made on first use (importing this module imports no Keras)."""
    keras = import_keras()

    @keras.saving.register_keras_serializable(package="melanoma_cli")
    class ShadesOfGray(keras.layers.Layer):
        """Raw 0-255 RGB in, colour-normalised 0-255 RGB out."""

        def __init__(self, power: float = 6.0, **kwargs) -> None:
            super().__init__(**kwargs)
            self.power = float(power)

        def call(self, images):
            ops = keras.ops
            x = ops.maximum(ops.cast(images, "float32") / 255.0, 1e-6)
            illuminant = ops.power(ops.mean(ops.power(x, self.power), axis=(1, 2), keepdims=True),
                                   1.0 / self.power)
            gain = ops.mean(illuminant, axis=-1, keepdims=True) / ops.maximum(illuminant, 1e-6)
            return ops.clip(x * gain, 0.0, 1.0) * 255.0

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self) -> dict:
            return {**super().get_config(), "power": self.power}

    return ShadesOfGray


def shades_of_gray(**kwargs: Any) -> Any:
    """A new Shades-of-Gray layer (`power`, and Keras layer arguments such as `name`)."""
    return layer_class()(**kwargs)
