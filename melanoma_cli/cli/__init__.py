"""The `melanoma` command: a Typer app whose commands live in sibling modules.

Nothing here imports TensorFlow: commands import the core lazily, so `--help` is instant.
"""

from __future__ import annotations

import os
import sys

import typer

from melanoma_cli import __version__
from melanoma_cli.cli import (
    adapt_command,
    env_command,
    evaluate_command,
    explain_command,
    export_command,
    info_command,
    inspect_command,
    predict_command,
    rebalance_command,
    serve_command,
    split_command,
    train_command,
)
from melanoma_cli.cli.common import INTERRUPTED_EXIT_CODE

app = typer.Typer(
    name="melanoma",
    help="Classify dermoscopic skin-lesion images into the 9 ISIC classes and flag melanoma.\n\n"
    "A decision aid for trained clinicians, not a diagnosis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"melanoma-cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Classify dermoscopic skin-lesion images and flag melanoma (a decision aid, not a diagnosis)."""
    from PIL import Image

    # The application sets Pillow's process-wide limit, which would warn from 89 megapixels on:
    # the decoder refuses pictures over `data.images.MAX_PIXELS` itself, file by file.
    Image.MAX_IMAGE_PIXELS = None


app.command("train")(train_command.train)
app.command("inspect-dataset")(inspect_command.inspect_dataset)
app.command("rebalance")(rebalance_command.rebalance)
app.command("split")(split_command.split)
app.command("evaluate")(evaluate_command.evaluate)
app.command("adapt")(adapt_command.adapt)
app.command("predict")(predict_command.predict)
app.command("explain")(explain_command.explain)
app.command("export")(export_command.export)
app.command("info")(info_command.info)
app.command("serve")(serve_command.serve)
app.command("env")(env_command.env)


def main() -> None:
    """Console-script entry point.

    An interrupted command has said so and left only complete files (every write is atomic):
    it exits at once, without the seconds the interpreter takes to tear TensorFlow down.
    """
    try:
        app()
    except SystemExit as exit_:
        if exit_.code == INTERRUPTED_EXIT_CODE:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED_EXIT_CODE)
        raise
