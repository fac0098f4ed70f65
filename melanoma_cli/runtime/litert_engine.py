"""The LiteRT engine: a model's .tflite export run by `ai-edge-litert`, without TensorFlow.

Nothing here imports TensorFlow or Keras, so a prediction on this path starts in a fraction of a
second. Images go through the interpreter at most INVOKE_BATCH at a time; it is resized only when
that size changes (a single image needs no resize at all).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.runtime.classifier import BaseClassifier
from melanoma_cli.runtime.names import EngineName
from melanoma_cli.runtime.run_folder import ModelInfo
from melanoma_cli.utils.errors import MelanomaError, first_line
from melanoma_cli.utils.tensorflow import silenced_stderr

INSTALL_HINT = "pip install ai-edge-litert"
# Measured on 2 cores (EfficientNet-Lite0, 180 px): 16 images per invoke run as fast as 64, and the
# interpreter's tensors then take ~130 MB instead of ~330 MB.
INVOKE_BATCH = 16


def interpreter_class() -> type | None:
    """LiteRT's Interpreter class, or None when `ai-edge-litert` is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    return Interpreter


@dataclass(kw_only=True)
class LiteRTClassifier(BaseClassifier):
    """A .tflite model in a LiteRT interpreter, with the facts from its model.json."""

    interpreter: Any
    engine: EngineName = "litert"  # litert-int8 for the full-integer export

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self._invoke(images[start:start + INVOKE_BATCH])
                               for start in range(0, len(images), INVOKE_BATCH)])

    def _invoke(self, images: np.ndarray) -> np.ndarray:
        interpreter = self.interpreter
        (source,) = interpreter.get_input_details()
        if source["shape"][0] != len(images):
            interpreter.resize_tensor_input(source["index"], [len(images), *source["shape"][1:]])
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], _quantized(images, source))
        interpreter.invoke()
        (target,) = interpreter.get_output_details()
        return _dequantized(interpreter.get_tensor(target["index"]), target)


def _quantized(images: np.ndarray, details: dict) -> np.ndarray:
    """Images as the input tensor takes them: float32, or integers by its scale and zero point."""
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return np.ascontiguousarray(images, dtype=dtype)
    scale, zero = details["quantization"]
    info = np.iinfo(dtype)
    values = np.asarray(images, np.float32) if scale == 0 else np.round(images / scale + zero)
    return np.ascontiguousarray(np.clip(values, info.min, info.max), dtype=dtype)


def _dequantized(values: np.ndarray, details: dict) -> np.ndarray:
    """An output tensor as float32 probabilities (integer outputs by their scale and zero point)."""
    if np.dtype(details["dtype"]).kind == "f":
        return values.astype(np.float32)  # a copy: the interpreter reuses its buffer
    scale, zero = details["quantization"]
    return ((values.astype(np.float32) - zero) * scale).astype(np.float32)


def _check_shapes(interpreter: Any, info: ModelInfo, path: Path) -> None:
    """Refuse a .tflite file whose input size or class count disagrees with model.json."""
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise MelanomaError(f"LiteRT model '{path}' must have one input and one output")
    size = info.image_size
    if tuple(inputs[0]["shape"][1:]) != (size, size, 3):
        raise MelanomaError(f"LiteRT model '{path}' takes {tuple(inputs[0]['shape'][1:])} "
                            f"but model.json says image_size {size}")
    if outputs[0]["shape"][-1] != len(info.classes):
        raise MelanomaError(f"LiteRT model '{path}' has {outputs[0]['shape'][-1]} outputs "
                            f"but model.json lists {len(info.classes)} classes")


def cpu_threads() -> int:
    """CPU cores this process may run on (respects taskset and cpusets, unlike os.cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_litert(path: Path, info: ModelInfo, interpreter: type | None = None,
                engine: EngineName = "litert") -> LiteRTClassifier:
    """Open a .tflite file in a LiteRT interpreter (one thread per CPU core).

    `interpreter` defaults to ai-edge-litert's; the export check passes TensorFlow's own.
    """
    interpreter = interpreter or interpreter_class()
    if interpreter is None:
        raise MelanomaError(f"the LiteRT engine needs the ai-edge-litert package ({INSTALL_HINT})")
    try:
        with silenced_stderr():  # the runtime announces its XNNPACK delegate on fd 2
            network = interpreter(model_path=str(path), num_threads=cpu_threads())
            network.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise MelanomaError(f"LiteRT model '{path}' cannot be loaded: {first_line(exc)}") from exc
    _check_shapes(network, info, path)
    return LiteRTClassifier(interpreter=network, engine=engine, **BaseClassifier.facts(info, path))
