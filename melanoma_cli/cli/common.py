"""What every command shares: consoles, option types, progress display, JSON output and errors."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from melanoma_cli.runtime.default_model import DEFAULT_MODEL_DIR
from melanoma_cli.runtime.names import Engine
from melanoma_cli.utils.errors import Interrupted, MelanomaError

if TYPE_CHECKING:  # the core is imported lazily, so that --help stays instant
    from melanoma_cli.runtime.classifier import Classifier
    from melanoma_cli.utils.progress import Progress as ProgressCallback

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

MODEL_HELP = ("Run folder, or a .keras or .tflite file with its model.json beside it "
              "(default: the bundled model, when one is installed).")
THRESHOLD_HELP = ("Flag melanoma when p(melanoma) >= T (default: the model's threshold from "
                  "model.json, else when melanoma is the most probable class).")

ModelOption = Annotated[Path | None, typer.Option("--model", "-m", metavar="MODEL", help=MODEL_HELP)]
KerasModelOption = Annotated[Path | None, typer.Option(  # Grad-CAM takes gradients: no .tflite
    "--model", "-m", metavar="MODEL",
    help="Run folder, or a .keras file with its model.json beside it (default: the "
         "bundled model, when one is installed).")]
ThresholdOption = Annotated[float | None, typer.Option(
    "--melanoma-threshold", min=0.0, max=1.0, metavar="T", help=THRESHOLD_HELP)]
BatchSizeOption = Annotated[int, typer.Option(
    "--batch-size", min=1, metavar="N", help="Images per model call.")]
EngineOption = Annotated[Engine, typer.Option(
    "--engine", metavar="ENGINE",
    help="litert: the model's float32 .tflite export, no TensorFlow (fast start); "
         "litert-int8: its int8 export (faster); keras: model.keras; auto: litert-int8 "
         "when its equivalence report passes, else litert when there is an export and "
         "ai-edge-litert is installed, else keras.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
TTAOption = Annotated[bool, typer.Option(
    "--tta", help="Average the probabilities over the 8 flips and 90-degree rotations of each image "
                  "(8 times the work); flags melanoma at the model's TTA threshold.")]


INTERRUPTED_EXIT_CODE = 130  # the shell's code for a command stopped by Ctrl-C


def handle_errors(command: F) -> F:
    """Turn input problems into one red line on stderr and exit code 1; Ctrl-C into 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Interrupted as exc:
            err.print(f"[yellow]Interrupted:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
        except MelanomaError as exc:
            err.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[yellow]Interrupted.[/]")
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None

    return wrapper  # type: ignore[return-value]


def print_json(payload: Any) -> None:
    """Write JSON to stdout (never through rich, so it stays machine-readable)."""
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """A warning on stderr (so --json output on stdout stays valid)."""
    err.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_status(kind: str, values: dict[str, Any], console: Console = err) -> None:
    """Show the core's "status" events as dim lines on stderr; ignore the other kinds."""
    if kind == "status":
        console.print(f"[dim]{escape(values['message'])}[/]", highlight=False)


@contextmanager
def image_progress(label: str) -> Iterator[ProgressCallback]:
    """A transient progress bar on stderr, and the callback that drives it from the core's events."""
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task(label, total=None)

        def hook(kind: str, values: dict[str, Any]) -> None:
            print_status(kind, values, progress.console)
            if kind == "start":
                progress.update(task, total=values["total"])
            elif kind == "batch":
                progress.advance(task, values["images"])

        yield hook


def announce_model(classifier: Classifier, threshold: float | None, as_json: bool) -> None:
    """Name the model used and its melanoma rule (on stderr when stdout carries JSON)."""
    rule = "argmax" if threshold is None else f"p >= {threshold:.3g}"
    melanoma = f"melanoma flag: {rule}" if classifier.melanoma_class else "no melanoma class"
    from melanoma_cli.runtime.tta import uses_tta

    name = ("bundled default model (see `melanoma info`)"
            if classifier.source.parent == DEFAULT_MODEL_DIR else str(classifier.source))
    tta = ", test-time augmentation: 8 views" if uses_tta(classifier) else ""
    (err if as_json else out).print(
        f"model: {name} ({len(classifier.classes)} classes, "
        f"{classifier.image_size} px, {melanoma}) engine: {classifier.engine}{tta}",
        highlight=False, markup=False, soft_wrap=True)
