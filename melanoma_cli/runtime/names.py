"""The engine, export-format and quantization names, defined once.

The CLI's options are built from these types at import time, so this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Literal, get_args

EngineName = Literal["keras", "litert", "litert-int8"]  # litert: the float32 .tflite export
Engine = Literal["auto", EngineName]  # `--engine`: auto picks an engine name
ExportFormat = Literal["tflite", "savedmodel"]
Quantize = Literal["dynamic", "int8"]  # int8: full-integer, calibrated; an engine of its own

INT8_ENGINE: EngineName = "litert-int8"
INT8_QUANTIZE: Quantize = "int8"

EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
QUANTIZE_MODES: tuple[Quantize, ...] = get_args(Quantize)
