"""`melanoma predict`: classify image files, folders and globs; flag likely melanomas."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from melanoma_cli.cli.common import err, handle_errors, out, print_json, warn
from melanoma_cli.runtime.default_model import DEFAULT_MODEL_DIR, EXAMPLES_DIR
from melanoma_cli.runtime.names import Engine

if TYPE_CHECKING:  # the core is imported lazily, so that --help stays instant
    from melanoma_cli.engine.prediction import Prediction
    from melanoma_cli.runtime.classifier import Classifier

DISCLAIMER = "Decision aid only: not a diagnosis. Refer suspicious lesions to a dermatologist."
MODEL_HELP = ("Run folder, or a .keras or .tflite file with its model.json beside it "
              "(default: the bundled model, when one is installed).")
THRESHOLD_HELP = ("Flag melanoma when p(melanoma) >= T (default: the model's threshold from "
                  "model.json, else when melanoma is the most probable class).")
ThresholdOption = Annotated[float | None, typer.Option(
    "--melanoma-threshold", min=0.0, help=THRESHOLD_HELP)]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Images per model call.")]
EngineOption = Annotated[Engine, typer.Option(
    "--engine", help="litert: the model's .tflite export, no TensorFlow (fast start); keras: "
                     "model.keras; auto: litert when the export and ai-edge-litert are there.")]


@contextmanager
def image_progress(label: str) -> Iterator[Any]:
    """A transient progress bar on stderr, and the hook that drives it from the core's events."""
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task(label, total=None)

        def hook(kind: str, values: dict[str, Any]) -> None:
            if kind == "status":
                progress.console.print(f"[dim]{values['message']}[/]", highlight=False)
            elif kind == "start":
                progress.update(task, total=values["total"])
            elif kind == "batch":
                progress.advance(task, values["images"])

        yield hook


def announce_model(classifier: Classifier, threshold: float | None, as_json: bool) -> None:
    """Name the model used and its melanoma rule (on stderr when stdout carries JSON)."""
    rule = "argmax" if threshold is None else f"p >= {threshold:.3g}"
    melanoma = f"melanoma flag: {rule}" if classifier.melanoma_class else "no melanoma class"
    name = ("bundled default model (see `melanoma info`)"
            if classifier.source.parent == DEFAULT_MODEL_DIR else str(classifier.source))
    (err if as_json else out).print(
        f"model: {name} ({len(classifier.classes)} classes, "
        f"{classifier.image_size} px, {melanoma}) engine: {classifier.engine}",
        highlight=False, markup=False, soft_wrap=True)


def _shown_path(path: Path) -> str:
    """The path relative to the working directory when it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _table(predictions: Sequence[Prediction]) -> Table:
    table = Table(title="Predictions")
    table.add_column("file", overflow="fold")
    table.add_column("prediction")
    table.add_column("next most likely")
    table.add_column("p(melanoma)", justify="right")
    table.add_column("flag", no_wrap=True)
    for item in predictions:
        ranked = [f"{escape(name)} {p:.3f}" for name, p in item.top_k]
        melanoma = "-" if item.melanoma_probability is None else f"{item.melanoma_probability:.3f}"
        flag = "[bold white on red] MELANOMA FLAG [/]" if item.melanoma_flag else ""
        table.add_row(escape(_shown_path(item.path)), ranked[0], "\n".join(ranked[1:]), melanoma, flag)
    return table


@handle_errors
def predict(
    paths: Annotated[list[str] | None, typer.Argument(
        metavar="[PATHS]...", help="Image files, folders (searched recursively) and globs.")] = None,
    examples: Annotated[bool, typer.Option(
        "--examples", help="Predict the bundled example images (one per class).")] = False,
    model: Annotated[Path | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    top_k: Annotated[int, typer.Option(
        "--top-k", "-k", min=1, help="How many classes to list per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the predictions as JSON.")] = False,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", help="Also write the predictions to this CSV file.")] = None,
    threshold: ThresholdOption = None,
    batch_size: BatchSizeOption = 64,
    engine: EngineOption = "auto",
) -> None:
    """Predict the class of each image, with top-k classes and a melanoma flag."""
    from melanoma_cli.data.images import Unreadable
    from melanoma_cli.engine.prediction import (
        check_csv_destination,
        expand_inputs,
        predict_files,
        resolve_threshold,
        write_csv,
    )
    from melanoma_cli.runtime.loading import load_classifier
    from melanoma_cli.utils.errors import MelanomaError

    if examples:
        paths = [*(paths or []), str(EXAMPLES_DIR)]
    if not paths:
        raise typer.BadParameter("give image paths, or --examples for the bundled examples",
                                 param_hint="PATHS")
    files = expand_inputs(paths)
    if csv_file is not None:
        check_csv_destination(csv_file)
    classifier = load_classifier(model, engine, note=warn)
    announce_model(classifier, resolve_threshold(classifier, threshold), as_json)
    predictions = []
    with image_progress("predicting") as hook:
        for item in predict_files(classifier, files, batch_size, top_k, threshold, hook):
            if isinstance(item, Unreadable):
                warn(f"skipped '{item.path}': {item.reason}")
            else:
                predictions.append(item)
    if not predictions:
        raise MelanomaError(f"none of the {len(files)} file(s) could be read as an image")
    if csv_file is not None:
        write_csv(predictions, classifier.classes, csv_file)
    if as_json:
        print_json([item.to_dict() for item in predictions])
    else:
        out.print(_table(predictions))
    (err if as_json else out).print(f"[dim]{DISCLAIMER}[/]", highlight=False)
