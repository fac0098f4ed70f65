"""The engine, export-format and quantization names, defined once.

The CLI's options are built from these types at import time, so this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Literal, get_args

EngineName = Literal["keras", "litert"]
Engine = Literal["auto", EngineName]  # `--engine`: auto picks an engine name
ExportFormat = Literal["tflite", "savedmodel"]
Quantize = Literal["dynamic"]

EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
QUANTIZE_MODES: tuple[Quantize, ...] = get_args(Quantize)
