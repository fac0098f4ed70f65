"""`melanoma export`: write a model's LiteRT (.tflite) or SavedModel export next to it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from melanoma_cli.cli.common import JsonOption, err, handle_errors, out, print_json, print_status
from melanoma_cli.runtime.names import ExportFormat, Quantize


@handle_errors
def export(
    model: Annotated[Path, typer.Option(
        "--model", "-m", metavar="RUN", help="Run folder, or a .keras file with its model.json beside it.")],
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", "-f", metavar="FORMAT",
        help="tflite: a LiteRT flatbuffer that predict runs without TensorFlow; "
             "savedmodel: a TensorFlow SavedModel folder.")] = "tflite",
    quantize: Annotated[Quantize | None, typer.Option(
        "--quantize", metavar="MODE",
        help="int8: full-integer, calibrated, written to model_int8.tflite with an "
             "equivalence report against the float export (engine litert-int8); "
             "dynamic: int8 weights, float activations (model_dynamic.tflite). "
             "The float model.tflite is never replaced.")] = None,
    calibration: Annotated[list[str] | None, typer.Option(
        "--calibration", metavar="[NAME=]PATH",
        help="int8: calibrate on this source (repeatable) instead of the run's training sources.")] = None,
    per_class: Annotated[int, typer.Option(
        "--calibration-per-class", min=1, metavar="N", help="int8: calibration images per class.")] = 30,
    report_on: Annotated[list[Path] | None, typer.Option(
        "--report-on", metavar="TEST_SET",
        help="int8: outside test set(s) for the equivalence report (repeatable) "
             "(default: the run's holdout folders).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Export a trained model (float32 by default), check it against Keras and record it in model.json."""
    from melanoma_cli.inference.export import export_model

    result = export_model(model, fmt, quantize, calibration, per_class, report_on,
                          progress=print_status)
    if as_json:
        print_json(result)
        return
    out.print(f"wrote {result['path']} ({result['size_bytes'] / 2**20:.2f} MB)", highlight=False,
              markup=False)
    out.print(f"max |probability difference| vs Keras on {result['check_images']} fixed images: "
              f"{result['max_abs_diff']:.2e}", highlight=False, markup=False)
    if "calibration" in result:
        sample = result["calibration"]
        names = ", ".join(f"{s['name']} {s['images']}" for s in sample["sources"])
        out.print(f"calibrated on {sample['images']} images (up to {sample['per_class']} per class; "
                  f"{names})", highlight=False, markup=False)
        report = result["report"]
        if report is None:
            err.print("[yellow]Warning:[/] no equivalence report (no outside test set: give --report-on "
                      "SET); the int8 export is used only with --engine litert-int8", highlight=False)
            return
        verdict = "passes" if report["passes"] else "does not pass"
        out.print(f"equivalence with the float export {verdict}: "
                  f"{'auto uses int8' if report['passes'] else 'auto keeps float'}", highlight=False,
                  markup=False)
        for reason in report["reasons"]:
            out.print(f"  {reason}", highlight=False, markup=False)
