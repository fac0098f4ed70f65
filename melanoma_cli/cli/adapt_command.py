"""`melanoma adapt`: fit a model to a clinic from a small labelled sample of its images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from melanoma_cli.cli.common import (
    ModelOption,
    err,
    handle_errors,
    out,
    print_json,
    print_status,
    warn,
)


def _interval(block: dict[str, Any]) -> str:
    low, high = block["ci95"] or (None, None)
    bounds = "" if low is None else f" ({low:.2f}-{high:.2f})"
    return f"{block['value']:.3f}{bounds}"


def _table(run_dir: Path, record: dict[str, Any]) -> Table:
    table = Table(title=f"Adapted {escape(record['base_model'])} -> {escape(str(run_dir))}")
    table.add_column("")
    table.add_column("value")
    table.add_row("sample", f"{escape(record['sample'])} ({record['images']} images)")
    table.add_row("classes", escape(", ".join(f"{k} {v}" for k, v in record["classes"].items())))
    table.add_row("melanoma threshold", f"{record['threshold']:.4g} (was {record['base_threshold']:.4g})"
                  if record["base_threshold"] is not None else f"{record['threshold']:.4g}")
    target = record["target_sensitivity"]
    table.add_row(f"sensitivity (target {target:.2f})", _interval(record["sensitivity"]))
    table.add_row("specificity", _interval(record["specificity"]))
    table.add_row("", "[dim]out of fold on the sample, 95% intervals; judge it on images not in the "
                      "sample (melanoma evaluate)[/]")
    return table


@handle_errors
def adapt(
    sample: Annotated[str, typer.Argument(
        help="The clinic's labelled sample: folder per class, images/ + labels.csv, or a labels CSV "
             "(labels are the model's class names).", metavar="SAMPLE")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="New run folder for the adapted model.")],
    model: ModelOption = None,
    sensitivity: Annotated[float, typer.Option(
        "--sensitivity", min=0.5, max=0.99, help="Melanoma sensitivity the threshold is set for.")] = 0.85,
    prior_strength: Annotated[float | None, typer.Option(
        "--prior-strength", min=0.0, help="How strongly the refitted head stays near the model's "
                                          "(default 0.03; larger: trust the sample less).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the out-of-fold split.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fit a model to your clinic from a few dozen to a few hundred labelled images: its frozen-feature
    head is refitted with the model's head as prior, and the melanoma threshold is set on the sample."""
    from melanoma_cli.data.sources import parse_source
    from melanoma_cli.runtime.default_model import default_model_dir
    from melanoma_cli.training.adapt import DEFAULT_PRIOR_STRENGTH
    from melanoma_cli.training.adapt import adapt as adapt_model

    result = adapt_model(parse_source(sample), model or default_model_dir(), out_dir,
                         sensitivity=sensitivity,
                         prior_strength=DEFAULT_PRIOR_STRENGTH if prior_strength is None else prior_strength,
                         seed=seed, overwrite=overwrite,
                         progress=lambda kind, values: print_status(kind, values, err))
    if result.skipped:
        warn(f"skipped {len(result.skipped)} unreadable file(s) of the sample "
             f"(first: {result.skipped[0].path}: {result.skipped[0].reason})")
    if as_json:
        print_json({"run_dir": str(result.run_dir), **result.record})
    else:
        out.print(_table(result.run_dir, result.record))
