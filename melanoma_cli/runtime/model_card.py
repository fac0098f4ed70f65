"""The facts a user needs before trusting a model: read from its folder without loading TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from melanoma_cli.runtime.default_model import MODEL_CARD, default_model_dir
from melanoma_cli.runtime.names import INT8_QUANTIZE
from melanoma_cli.runtime.run_folder import ModelInfo, RunFolder, resolve_model_path
from melanoma_cli.utils.errors import MelanomaError


def _int8_summary(model_file: Path, info: ModelInfo) -> dict[str, Any] | None:
    """The int8 export, how it was calibrated, and its equivalence report (None without an export)."""
    from melanoma_cli.runtime.loading import int8_approved, int8_report, tflite_file

    key = f"tflite_{INT8_QUANTIZE}"
    path = tflite_file(model_file, info, key)
    if path is None:
        return None
    report = int8_report(model_file)
    return {
        "path": str(path),
        "quantization": info.quantization.get(key),
        "default_engine": int8_approved(model_file, path),
        "report": report,
    }


def model_summary(model: Path | None) -> dict[str, Any]:
    """Classes, input size, thresholds, training record, outside-set results and the validation
    report of a model."""
    folder = default_model_dir() if model is None else model
    model_file, info_file = resolve_model_path(folder)
    info = ModelInfo.load(info_file)
    metrics = _metrics(RunFolder(model_file.parent).metrics)
    return {
        "model": str(model_file),
        "bundled": model is None,
        "classes": info.classes,
        "image_size": info.image_size,
        "melanoma_class": info.melanoma_class,
        "melanoma_threshold": info.melanoma_threshold,
        "melanoma_threshold_tta": info.melanoma_threshold_tta,
        "status": info.status,
        "training": info.training,
        "versions": info.versions,
        "outside_sets": info.outside_sets,
        "validation": None if metrics is None else metrics.get("validation", metrics),
        "model_card": str(MODEL_CARD) if model is None and MODEL_CARD.is_file() else None,
        "int8": _int8_summary(model_file, info),
    }


def _metrics(path: Path) -> dict[str, Any] | None:
    """A run's metrics.json (None when there is none)."""
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MelanomaError(f"'{path}' is not valid JSON: {exc}") from exc
    if not isinstance(metrics, dict):
        raise MelanomaError(f"'{path}' is not a metrics report (a JSON object)")
    return metrics
