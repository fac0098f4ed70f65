"""`melanoma export`: write a model's LiteRT (.tflite) or SavedModel export next to it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from melanoma_cli.cli.common import JsonOption, handle_errors, out, print_json
from melanoma_cli.runtime.names import ExportFormat, Quantize


@handle_errors
def export(
    model: Annotated[Path, typer.Option(
        "--model", "-m", help="Run folder, or a .keras file with its model.json beside it.")],
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", "-f", help="tflite: a LiteRT flatbuffer that predict runs without TensorFlow; "
                               "savedmodel: a TensorFlow SavedModel folder.")] = "tflite",
    quantize: Annotated[Quantize | None, typer.Option(
        "--quantize", help="dynamic: int8 weights, float activations, written to "
                           "model_dynamic.tflite beside the float export that predict runs "
                           "(tflite only; smaller, not always faster).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Export a trained model (float32 by default), check it against Keras and record it in model.json."""
    from melanoma_cli.engine.export import export_model

    result = export_model(model, fmt, quantize)
    if as_json:
        print_json(result)
        return
    out.print(f"wrote {result['path']} ({result['size_bytes'] / 2**20:.2f} MB)", highlight=False,
              markup=False)
    out.print(f"max |probability difference| vs Keras on {result['check_images']} fixed images: "
              f"{result['max_abs_diff']:.2e}", highlight=False, markup=False)
