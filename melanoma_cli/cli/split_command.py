"""`melanoma split`: one labelled source into two parts by lesion (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from melanoma_cli.cli.common import JsonOption, handle_errors, out, print_json


def _table(result: dict[str, Any]) -> Table:
    how = (f"as {result['from_parts_file']}" if result["from_parts_file"] else f"seed {result['seed']}")
    table = Table(title=f"Split {escape(result['source'])} by lesion ({escape(how)})")
    parts = list(result["parts"])
    table.add_column("class")
    for part in parts:
        table.add_column(escape(part), justify="right")
    classes = sorted({c for row in result["parts"].values() for c in row["classes"]})
    for name in classes:
        table.add_row(escape(name), *(str(result["parts"][p]["classes"].get(name, 0)) for p in parts))
    table.add_section()
    table.add_row("images (lesions)", *(f"{result['parts'][p]['images']} ({result['parts'][p]['lesions']})"
                                         for p in parts))
    return table


@handle_errors
def split(
    source: Annotated[str, typer.Argument(
        help="A labelled source: folder per class, images/ + labels.csv, or a labels CSV "
             "(NAME=PATH names it).", metavar="SOURCE")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for parts.csv and one labels "
                                                              "CSV per part (the source is only read).")],
    fraction: Annotated[float, typer.Option(
        "--fraction", min=0.01, max=0.99, help="Share of the lesions in the first part.")] = 0.4,
    names: Annotated[str, typer.Option(
        "--names", help="The two parts' names, comma-separated (the first gets --fraction).")
    ] = "adapt,test",
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the split.")] = 0,
    parts: Annotated[Path | None, typer.Option(
        "--parts", help="Reproduce this parts.csv (file,part) instead of drawing a split.")] = None,
    lesion_pattern: Annotated[str | None, typer.Option(
        "--lesion-pattern", help="A regular expression whose first group, found in a file name, names "
                                 "its lesion (images of one lesion stay in one part, as with a "
                                 "group column).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Split a labelled source into two parts by lesion, stratified by class: e.g. a sample to adapt
    on and a part to judge the adapted model on. Each part is a labels CSV usable as a source."""
    from melanoma_cli.data.parts import split_source
    from melanoma_cli.data.sources import parse_source

    first, _, second = names.partition(",")
    if not first.strip() or not second.strip() or "," in second:
        raise typer.BadParameter("give two names separated by one comma", param_hint="--names")
    result = split_source(parse_source(source), out_dir, fraction=fraction, seed=seed,
                          names=(first.strip(), second.strip()), parts_file=parts, overwrite=overwrite,
                          lesion_pattern=lesion_pattern)
    if as_json:
        print_json(result)
    else:
        out.print(_table(result))
