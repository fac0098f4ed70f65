"""`melanoma predict`: classify image files, folders and globs; flag likely melanomas."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from melanoma_cli.cli.common import (
    BatchSizeOption,
    EngineOption,
    JsonOption,
    ModelOption,
    ThresholdOption,
    TTAOption,
    announce_model,
    err,
    handle_errors,
    image_progress,
    out,
    print_json,
    warn,
)
from melanoma_cli.runtime.default_model import EXAMPLES_DIR
from melanoma_cli.utils.notice import DISCLAIMER

if TYPE_CHECKING:  # the core is imported lazily, so that --help stays instant
    from melanoma_cli.data.images import Unreadable
    from melanoma_cli.inference.prediction import Prediction

PARTIAL_EXIT_CODE = 3  # some inputs could not be classified (their rows say why)


def _shown_path(path: Path) -> str:
    """A bundled example by its name; else the path relative to the working directory when it
    lies below it, else as given."""
    if path.parent == EXAMPLES_DIR:
        return path.name
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _listed(paths: Sequence[Path], shown: int = 3) -> str:
    """The first few paths, quoted, for a one-line warning."""
    return ", ".join(f"'{path}'" for path in paths[:shown]) + (", ..." if len(paths) > shown else "")


def _table(items: Sequence[Prediction | Unreadable]) -> Table:
    table = Table(title="Predictions")
    table.add_column("file", overflow="fold")
    table.add_column("prediction")
    table.add_column("next most likely")
    table.add_column("p(melanoma)", justify="right")
    table.add_column("flag", no_wrap=True)
    for item in items:
        if not hasattr(item, "top_k"):  # unreadable: its row says why
            table.add_row(escape(_shown_path(item.path)), f"[red]unreadable[/]: {escape(item.reason)}",
                          "", "-", "")
            continue
        ranked = [f"{escape(name)} {p:.3f}" for name, p in item.top_k]
        melanoma = "-" if item.melanoma_probability is None else f"{item.melanoma_probability:.3f}"
        flag = "[bold white on red] MELANOMA FLAG [/]" if item.melanoma_flag else ""
        table.add_row(escape(_shown_path(item.path)), ranked[0], "\n".join(ranked[1:]), melanoma, flag)
    return table


@handle_errors
def predict(
    paths: Annotated[list[str] | None, typer.Argument(
        metavar="PATHS", help="Image files, folders (searched recursively) and globs.")] = None,
    examples: Annotated[bool, typer.Option(
        "--examples", help="Predict the bundled example images (one per class).")] = False,
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option(
        "--top-k", "-k", min=1, metavar="K", help="How many classes to list per image.")] = 3,
    as_json: JsonOption = False,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", metavar="FILE", help="Also write the predictions to this CSV file.")] = None,
    threshold: ThresholdOption = None,
    batch_size: BatchSizeOption = 64,
    engine: EngineOption = "auto",
    tta: TTAOption = False,
) -> None:
    """Predict the class of each image, with top-k classes and a melanoma flag.

    Every input gets a row; a file that cannot be read as an image gets status "unreadable"
    and the reason, and the command then exits with code 3.
    """
    from melanoma_cli.data.images import Unreadable
    from melanoma_cli.inference.prediction import (
        check_csv_destination,
        expand_inputs,
        predict_files,
        resolve_threshold,
        unreadable_record,
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
    classifier = load_classifier(model, engine, note=warn, tta=tta)
    announce_model(classifier, resolve_threshold(classifier, threshold), as_json)
    with image_progress("predicting") as hook:
        items = list(predict_files(classifier, files, batch_size, top_k, threshold, hook))
    unreadable = [item for item in items if isinstance(item, Unreadable)]
    if len(unreadable) == len(items):
        first = unreadable[0]
        raise MelanomaError(f"none of the {len(files)} file(s) could be read as an image "
                            f"('{first.path}': {first.reason})")
    if csv_file is not None:
        write_csv(items, classifier.classes, csv_file)
    if as_json:
        print_json([unreadable_record(item) if isinstance(item, Unreadable) else item.to_dict()
                    for item in items])
    else:
        out.print(_table(items))
    (err if as_json else out).print(f"[dim]{DISCLAIMER}[/]", highlight=False)
    gray = [item.path for item in items if not isinstance(item, Unreadable) and item.grayscale]
    if gray:
        warn(f"{len(gray)} image(s) have no colour (grayscale); the model was trained on colour "
             "dermoscopy, so their predictions are unreliable: " + _listed(gray))
    if unreadable:
        warn(f"{len(unreadable)} of {len(items)} file(s) could not be read as an image and were not "
             "classified (status 'unreadable'): " + _listed([item.path for item in unreadable]))
        raise typer.Exit(PARTIAL_EXIT_CODE)
