"""Exporting a trained model: a LiteRT flatbuffer (.tflite) or a TensorFlow SavedModel folder.

Each export is checked against the Keras model on a fixed batch and recorded in model.json, so
`predict` and `evaluate` can find it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.runtime.litert_engine import interpreter_class, load_litert
from melanoma_cli.runtime.names import EXPORT_FORMATS, QUANTIZE_MODES, ExportFormat, Quantize
from melanoma_cli.runtime.run_folder import ModelInfo, RunFolder, load_model, resolve_model_path
from melanoma_cli.utils.atomic import write_with
from melanoma_cli.utils.errors import MelanomaError, first_line
from melanoma_cli.utils.tensorflow import import_tensorflow, silenced_stderr

CHECK_IMAGES = 8
CHECK_SEED = 0


def export_key(fmt: ExportFormat, quantize: Quantize | None) -> str:
    """The export's key in model.json `exports`: tflite (what predict runs), tflite_dynamic, ..."""
    return fmt if quantize is None else f"{fmt}_{quantize}"


def check_batch(image_size: int) -> np.ndarray:
    """The fixed, seeded batch of uint8 RGB images that every export is compared on."""
    rng = np.random.default_rng(CHECK_SEED)
    return rng.integers(0, 256, (CHECK_IMAGES, image_size, image_size, 3), dtype=np.uint8)


@contextlib.contextmanager
def _quiet() -> Any:
    """Keep the converters' chatter ("Saved artifact at ...", native logs) off stdout and stderr."""
    with silenced_stderr(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _tflite_bytes(network: Any, quantize: Quantize | None) -> bytes:
    tf = import_tensorflow()

    converter = tf.lite.TFLiteConverter.from_keras_model(network)
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, float activations
    with _quiet():
        return converter.convert()


def _tflite_outputs(path: Path, info: ModelInfo, images: np.ndarray) -> np.ndarray:
    """Run the written flatbuffer: in LiteRT if installed, else in TensorFlow's own interpreter."""
    interpreter = interpreter_class()
    if interpreter is None:
        tf = import_tensorflow()

        interpreter = tf.lite.Interpreter
    with _quiet():
        return load_litert(path, info, interpreter).predict(images)


def _replace_folder(target: Path, build: Any) -> None:
    """Let `build` fill a temporary folder beside `target`, then swap it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    umask = os.umask(0)
    os.umask(umask)
    try:
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the usual permissions
        build(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _savedmodel_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    tf = import_tensorflow()

    with _quiet():
        served = tf.saved_model.load(str(path))
        return np.asarray(served.serve(tf.constant(images, tf.float32)))


def _write_export(network: Any, info: ModelInfo, target: Path, fmt: ExportFormat,
                  quantize: Quantize | None, images: np.ndarray) -> np.ndarray:
    """Write the export to `target` and return its outputs on `images`."""
    if fmt == "savedmodel":
        def build(folder: Path) -> None:
            with _quiet():
                network.export(str(folder), format="tf_saved_model")

        _replace_folder(target, build)
        return _savedmodel_outputs(target, images)
    flatbuffer = _tflite_bytes(network, quantize)
    write_with(target, lambda tmp: tmp.write_bytes(flatbuffer))
    return _tflite_outputs(target, info, images)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def export_model(model_path: Path | str, fmt: ExportFormat = "tflite",
                 quantize: Quantize | None = None) -> dict[str, Any]:
    """Export a run folder's model next to it, check it against Keras, record it in model.json.

    Returns the path written, its size in bytes and the largest absolute difference between the
    export's and Keras's probabilities on a fixed seeded batch of uint8 images.
    """
    if fmt not in EXPORT_FORMATS:
        raise MelanomaError(f"unknown export format '{fmt}' (use {' or '.join(EXPORT_FORMATS)})")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise MelanomaError(f"unknown quantization '{quantize}' (use {' or '.join(QUANTIZE_MODES)})")
    if quantize and fmt != "tflite":
        raise MelanomaError("--quantize applies to the tflite format only")
    model_file, info_file = resolve_model_path(Path(model_path))
    if model_file.suffix != ".keras":
        raise MelanomaError(f"export needs the Keras model (a run folder or .keras file), not '{model_file}'")
    loaded = load_model(model_file)
    target = RunFolder(model_file.parent).export(fmt, quantize)
    images = check_batch(loaded.info.image_size)
    expected = np.asarray(loaded.model.predict_on_batch(images.astype(np.float32)))
    try:
        exported = _write_export(loaded.model, loaded.info, target, fmt, quantize, images)
        info = ModelInfo.load(info_file)  # re-read: record the export without dropping other edits
        info.exports[export_key(fmt, quantize)] = target.name
        info.save(info_file.parent)
    except (OSError, ValueError, RuntimeError) as exc:
        raise MelanomaError(f"exporting '{model_file}' as {fmt} failed: {first_line(exc)}") from exc
    return {
        "format": fmt,
        "quantize": quantize,
        "path": str(target),
        "size_bytes": _size(target),
        "max_abs_diff": float(np.abs(exported - expected).max()),
        "check_images": len(images),
    }
