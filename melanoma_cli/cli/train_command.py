"""`melanoma train`: parse options, run the core trainer, show progress and the result."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from melanoma_cli.cli.common import err, handle_errors, out, print_json, print_status, warn


def _progress_hook(progress: Progress):
    state: dict[str, Any] = {"task": None, "epoch": 0, "epochs": 0}

    def hook(kind: str, values: dict[str, Any]) -> None:
        print_status(kind, values, progress.console)
        if kind == "start":
            state["epochs"], state["steps"] = values["epochs"], values["steps"]
            err.print(f"training on {values['train']} images, validating on {values['validation']}")
            state["task"] = progress.add_task(f"epoch {values['done'] + 1}",
                                              total=values["epochs"] * values["steps"],
                                              completed=values["done"] * values["steps"])
        elif kind == "batch":
            progress.advance(state["task"])
        elif kind == "epoch":
            state["epoch"] = values["epoch"]
            progress.update(state["task"], completed=values["epoch"] * state["steps"],
                            description=f"epoch {min(values['epoch'] + 1, state['epochs'])}")
            progress.console.print(
                f"epoch {values['epoch']:>3}/{state['epochs']}  loss {values.get('loss', 0):.4f}  "
                f"acc {values.get('accuracy', 0):.3f}  val_loss {values.get('val_loss', 0):.4f}  "
                f"val_acc {values.get('val_accuracy', 0):.3f}  "
                f"val_bal_acc {values.get('val_balanced_accuracy', 0):.3f}",
                highlight=False,
            )

    return hook


def _result_table(result) -> Table:
    table = Table(title=f"Validation of best epoch ({result.best_epoch}) - {result.run_dir}")
    table.add_column("class")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    for name, row in result.validation["per_class"].items():
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        table.add_row(name, str(row["n"]), accuracy)
    table.add_section()
    table.add_row("overall", str(result.validation["n"]), f"{result.validation['accuracy']:.3f}")
    table.add_row("balanced", "", f"{result.validation['balanced_accuracy']:.3f}")
    return table


def _refuse_with_resume(**given: object) -> None:
    """--resume takes the run's own config, folder and holdouts: other choices are usage errors."""
    names = [f"--{name}" for name, value in given.items() if value]
    if names:
        raise typer.BadParameter(f"cannot be combined with {', '.join(names)} (a resumed run keeps "
                                 "its own config, run folder and holdout folders)", param_hint="'--resume'")


def _report(result, as_json: bool) -> None:
    if result.skipped:
        warn(f"skipped {len(result.skipped)} unreadable file(s):")
        for item in result.skipped:
            err.print(f"  {item.path}: {item.reason}", highlight=False, markup=False,
                      soft_wrap=True)
    if result.interrupted:
        warn(f"training interrupted: best checkpoint kept in '{result.run_dir}' (marked incomplete); "
             f"continue it with: melanoma train --resume '{result.run_dir}'")
    if as_json:
        print_json(result.summary)
    else:
        out.print(_result_table(result))


@handle_errors
def train(
    config: str | None = typer.Option(None, "--config", "-c",
                                      help="YAML config: a path, or the name of a bundled config "
                                           "(baseline.yaml, augmented.yaml, final.yaml) "
                                           "\\[default: baseline.yaml]."),
    data: list[str] = typer.Option([], "--data", "-d", metavar="[NAME=]PATH",
                                   help="Training source (repeatable): a folder with one subfolder "
                                        "per class, or a folder with labels.csv beside images/ "
                                        "(with --resume: only if the run's data has moved)."),
    out_dir: Path | None = typer.Option(None, "--out", "-o",
                                        help="Run folder to create \\[default: runs/<config name>]."),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                        help="Override a config value, e.g. train.epochs=5 (repeatable)."),
    holdout: list[Path] = typer.Option([], "--holdout",
                                       help="Folder whose image contents must never be trained on "
                                            "(repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    resume: Path | None = typer.Option(None, "--resume", metavar="RUN",
                                       help="Continue an interrupted run folder from its last "
                                            "completed epoch, with its own config and data."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON."),
) -> None:
    """Train a model and write a run folder (model, class names, config, history, metrics, plots)."""
    from melanoma_cli.config import load_config
    from melanoma_cli.data.sources import parse_source
    from melanoma_cli.engine import training

    sources = [parse_source(text) for text in data]
    if resume is not None:
        _refuse_with_resume(config=config, out=out_dir, set=overrides, holdout=holdout,
                            overwrite=overwrite)
        start = functools.partial(training.resume, resume, sources)
    else:
        settings = load_config(config or "baseline.yaml", overrides)
        if not sources and not settings.data.sources:
            raise typer.BadParameter("missing (required unless the config lists data.sources, "
                                     "or --resume is given)", param_hint="'--data'")
        run_dir = out_dir or Path("runs") / Path(config or "baseline.yaml").stem
        start = functools.partial(training.train, settings, sources, run_dir, overwrite=overwrite,
                                  holdout_dirs=holdout)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        result = start(progress=_progress_hook(progress))
    _report(result, as_json)
