"""Exporting a trained model: a LiteRT flatbuffer (.tflite) or a TensorFlow SavedModel folder.

Each export is checked against the Keras model on a fixed batch and recorded in model.json, so
`predict` and `evaluate` can find it. A full-integer int8 export is calibrated on a class-balanced
sample of the training sources and judged against the float export (inference/equivalence.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.data.sources import check_folder
from melanoma_cli.inference.calibration import CALIBRATION_PER_CLASS, CalibrationSample, calibration_sample
from melanoma_cli.runtime.litert_engine import interpreter_class, load_litert
from melanoma_cli.runtime.names import (
    EXPORT_FORMATS,
    INT8_ENGINE,
    INT8_QUANTIZE,
    QUANTIZE_MODES,
    ExportFormat,
    Quantize,
)
from melanoma_cli.runtime.run_folder import (
    LoadedModel,
    ModelInfo,
    RunFolder,
    file_digest,
    load_model,
    resolve_model_path,
)
from melanoma_cli.utils.atomic import write_text, write_with
from melanoma_cli.utils.errors import MelanomaError, first_line
from melanoma_cli.utils.progress import Progress, no_progress
from melanoma_cli.utils.tensorflow import import_tensorflow, silenced_stderr

# The int8 method `export --quantize int8` uses, chosen by screening (benchmarks/int8_variants.py).
INT8_METHOD = "TFLite converter, full-integer int8 (per-channel conv weights), float32 input and output"
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


def int8_converter(network: Any, calibration: np.ndarray) -> Any:
    """The TFLite converter set for full-integer int8: every op int8, conv weights per channel,
    activation ranges from `calibration` (uint8 model inputs); input and output stay float32."""
    tf = import_tensorflow()

    def representative() -> Any:
        for image in calibration:
            yield [image[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(network)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def convert(converter: Any) -> bytes:
    """A converter's flatbuffer, without TensorFlow's conversion chatter."""
    with _quiet():
        return converter.convert()


def int8_bytes(network: Any, calibration: np.ndarray) -> bytes:
    """The int8 flatbuffer that `export --quantize int8` writes (INT8_METHOD)."""
    return convert(int8_converter(network, calibration))


def _signature_input_name(flatbuffer: bytes, interpreter: type | None) -> str:
    if interpreter is None:
        interpreter = import_tensorflow().lite.Interpreter
    runner = interpreter(model_content=flatbuffer)
    (name,) = runner.get_signature_list()["serving_default"]["inputs"]
    return name


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
                 quantize: Quantize | None = None, calibration: list[str] | None = None,
                 per_class: int = CALIBRATION_PER_CLASS, test_dirs: list[Path] | None = None,
                 progress: Progress = no_progress) -> dict[str, Any]:
    """Export a run folder's model next to it, check it against Keras, record it in model.json.

    Returns the path written, its size in bytes and the largest absolute difference between the
    export's and Keras's probabilities on a fixed seeded batch of uint8 images. An int8 export
    is calibrated on a class-balanced sample of the training sources (or `calibration`) and,
    when there are outside test sets (`test_dirs`, else model.json's holdout folders), compared
    with the float export in an equivalence report written beside it.
    """
    if fmt not in EXPORT_FORMATS:
        raise MelanomaError(f"unknown export format '{fmt}' (use {' or '.join(EXPORT_FORMATS)})")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise MelanomaError(f"unknown quantization '{quantize}' (use {' or '.join(QUANTIZE_MODES)})")
    if quantize and fmt != "tflite":
        raise MelanomaError("--quantize applies to the tflite format only")
    if (calibration or test_dirs) and quantize != INT8_QUANTIZE:
        raise MelanomaError(f"--calibration and --report-on apply to --quantize {INT8_QUANTIZE} only")
    model_file, info_file = resolve_model_path(Path(model_path))
    if model_file.suffix != ".keras":
        raise MelanomaError(f"export needs the Keras model (a run folder or .keras file), not '{model_file}'")
    for test_dir in test_dirs or []:
        check_folder(Path(test_dir), "test set")
    loaded = load_model(model_file)
    run = RunFolder(model_file.parent)
    target = run.export(fmt, quantize)
    images = check_batch(loaded.info.image_size)
    expected = np.asarray(loaded.model.predict_on_batch(images.astype(np.float32)))
    sample = None
    if quantize == INT8_QUANTIZE:
        progress("status", {"message": "decoding the calibration sample"})
        sample = calibration_sample(loaded.info, calibration, per_class)
        progress("status", {"message": f"quantizing on {len(sample.images)} calibration images"})
    try:
        if sample is not None:
            flatbuffer = int8_bytes(loaded.model, sample.images)
            write_with(target, lambda tmp: tmp.write_bytes(flatbuffer))
            exported = _tflite_outputs(target, loaded.info, images)
        else:
            exported = _write_export(loaded.model, loaded.info, target, fmt, quantize, images)
        info = ModelInfo.load(info_file)  # re-read: record the export without dropping other edits
        key = export_key(fmt, quantize)
        info.exports[key] = target.name
        if fmt == "tflite":  # what loading a .tflite checks: this very file, made from this model
            info.export_sha256[key] = file_digest(target)
        if sample is not None:
            info.quantization[key] = {"method": INT8_METHOD, "calibration": sample.description}
        info.save(info_file.parent)
    except (OSError, ValueError, RuntimeError) as exc:
        raise MelanomaError(f"exporting '{model_file}' as {fmt} failed: {first_line(exc)}") from exc
    result = {
        "format": fmt,
        "quantize": quantize,
        "path": str(target),
        "size_bytes": _size(target),
        "max_abs_diff": float(np.abs(exported - expected).max()),
        "check_images": len(images),
    }
    if sample is not None:
        result["calibration"] = sample.description
        result["report"] = _int8_report(loaded, run, target, test_dirs, sample, progress)
    return result


def _int8_report(loaded: LoadedModel, run: RunFolder, int8: Path, test_dirs: list[Path] | None,
                 sample: CalibrationSample, progress: Progress) -> dict[str, Any] | None:
    """Compare the int8 export with the float one on the outside test sets; write int8_report.json.

    Without test sets the old report (if any) is removed: it judged another file.
    """
    if test_dirs is None:
        test_dirs = [Path(d) for d in loaded.info.training.get("holdout_dirs") or [] if Path(d).is_dir()]
    if not test_dirs:
        run.int8_report.unlink(missing_ok=True)
        return None
    from melanoma_cli.inference.equivalence import equivalence_report

    with tempfile.TemporaryDirectory(prefix=".float-", dir=run.path) as scratch:
        reference_path = run.export("tflite")
        if not reference_path.is_file():  # compare with what a float export of this model would be
            reference_path = Path(scratch) / reference_path.name
            flatbuffer = _tflite_bytes(loaded.model, None)
            reference_path.write_bytes(flatbuffer)
        reference = load_litert(reference_path, loaded.info)
        candidate = load_litert(int8, loaded.info, engine=INT8_ENGINE)
        report = equivalence_report(reference, candidate, test_dirs, progress)
    report["float"] = str(run.export("tflite"))
    report["int8_sha256"] = file_digest(int8)
    report["method"] = INT8_METHOD
    report["calibration"] = sample.description
    write_text(run.int8_report, json.dumps(report, indent=2) + "\n")
    return report
