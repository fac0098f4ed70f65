"""`melanoma rebalance`: grow small classes with Augmentor into a new folder (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from melanoma_cli.cli.common import JsonOption, err, handle_errors, out, print_json, print_status, warn


def _result_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"Rebalanced {escape(result['source'])} -> {escape(result['out'])} "
                        f"(target {result['target']}, seed {result['seed']})")
    table.add_column("class")
    for column in ("before", "generated", "after"):
        table.add_column(column, justify="right")
    for name, row in result["classes"].items():
        table.add_row(escape(name), str(row["before"]), str(row["generated"]), str(row["after"]))
    table.add_section()
    total = result["total"]
    table.add_row("total", str(total["before"]), str(total["generated"]), str(total["after"]))
    return table


def _warnings(result: dict[str, Any]) -> None:
    """What was left out of the copy, and source problems the copy carries over."""
    if result["skipped"]:
        warn(f"skipped {len(result['skipped'])} unreadable file(s) (not copied):")
        for item in result["skipped"]:
            err.print(f"  {item['path']}: {item['reason']}", highlight=False, markup=False,
                      soft_wrap=True)
    if result["not_copied"]:
        warn(f"not copied (outside the class folders' top level): {len(result['not_copied'])}")
        for path in result["not_copied"]:
            err.print(f"  {path}", highlight=False, markup=False,
                      soft_wrap=True)
    empty = [name for name, row in result["classes"].items() if row["before"] == 0]
    if empty:
        warn(f"class(es) with no readable image left empty: {', '.join(empty)}")
    if result["duplicate_groups"] or result["conflict_groups"]:
        warn(f"the source has {result['duplicate_groups']} duplicate and "
             f"{result['conflict_groups']} label-conflict group(s), copied as they are "
             "(see `melanoma inspect-dataset`)")


@handle_errors
def rebalance(
    data: Annotated[Path, typer.Argument(
        metavar="DATA",
        help="Source dataset: a folder with one subfolder per class (only read, never written).")],
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", metavar="DIR", help="New folder for the originals plus generated images.")],
    target: Annotated[int | None, typer.Option(
        "--target", min=1, metavar="N", help="Images every class reaches at least "
                                "(default: rebalance.target, else the largest class).")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", metavar="N", help="Random seed (default: the config's seed).")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", metavar="CONFIG",
        help="YAML config (path or bundled name) whose rebalance section sets "
             "the operations (default: the built-in defaults).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE",
        help="Override a config value, e.g. rebalance.max_rotation=15 (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a previous rebalance output folder.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy a dataset to --out and add Augmentor images until every class reaches the target."""
    from melanoma_cli.config import load_config
    from melanoma_cli.data.rebalance import rebalance_folder

    settings = load_config(config, overrides or [])
    result = rebalance_folder(
        data, out_dir,
        target=target if target is not None else settings.rebalance.target,
        config=settings.rebalance,
        seed=seed if seed is not None else settings.seed,
        overwrite=overwrite,
        progress=print_status,
    )
    _warnings(result)
    if as_json:
        print_json(result)
    else:
        out.print(_result_table(result))
