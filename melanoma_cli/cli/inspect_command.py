"""`melanoma inspect-dataset`: the health report of training sources, cleaned as `train` cleans them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from melanoma_cli.cli.common import JsonOption, err, handle_errors, out, print_json
from melanoma_cli.utils.errors import MelanomaError


def _short(path: str, root: str | None) -> str:
    """`path` relative to `root` when it lies below it, markup-escaped for rich."""
    if root is not None and Path(path).is_relative_to(root):
        path = str(Path(path).relative_to(root))
    return escape(path)


def _class_table(report: dict[str, Any]) -> Table:
    sources = report.get("sources") or []
    where = (f"{len(sources)} sources combined ({', '.join(escape(s['name']) for s in sources)})"
             if len(sources) > 1 else escape(report["root"]))
    table = Table(title=f"Classes in {where}")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    table.add_column("kept by training", justify="right")
    kept = report["cleaning"]["kept_by_class"]
    for name, count in report["classes"].items():
        table.add_row(escape(name), str(count), f"{report['share'][name]:.1%}", str(kept[name]))
    table.add_section()
    ratio = report["imbalance_ratio"]
    table.add_row("total", str(report["total"]), "", str(sum(kept.values())))
    table.add_row("imbalance (largest/smallest)", "-" if ratio is None else f"{ratio:.2f}", "", "")
    return table


def _image_lines(report: dict[str, Any]) -> list[str]:
    sizes = report["sizes"]
    common = ", ".join(f"{s['size']} ({s['count']})" for s in sizes["most_common"]) or "-"
    return [
        f"sizes: {sizes['distinct']} distinct; most common {common}",
        "modes: " + (", ".join(f"{m} ({n})" for m, n in report["modes"].items()) or "-"),
        "formats: " + (", ".join(f"{f} ({n})" for f, n in report["formats"].items()) or "-"),
    ]


def _table(title: str, columns: list[str], rows: list[list[str]], caption: str = "") -> Table:
    table = Table(title=title, title_justify="left", caption=caption or None,
                  caption_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")  # paths are folded, never cut short
    for row in rows:
        table.add_row(*row)
    return table


def _problem_tables(report: dict[str, Any]) -> list[Table]:
    """One table per kind of problem found (none when the dataset is clean)."""
    root, test_root = report["root"], report["test_dir"]
    tables = []
    if report["unreadable"]:
        rows = [[_short(u["path"], root), escape(u["reason"])] for u in report["unreadable"]]
        tables.append(_table("Unreadable or non-image files (skipped)", ["file", "reason"], rows))
    if report["nested"]:
        rows = [[_short(n["path"], root), str(len(n["files"]))] for n in report["nested"]]
        tables.append(_table("Folders nested below a class folder (a recursive loader would "
                             "read them)", ["folder", "files"], rows))
    if report["outside_classes"]:
        rows = [[_short(p, root)] for p in report["outside_classes"]]
        tables.append(_table("Files outside any class folder (ignored)", ["file"], rows))
    if report["duplicate_groups"]:
        rows = [[str(len(g)), "\n".join(_short(p, root) for p in g)]
                for g in report["duplicate_groups"]]
        tables.append(_table("Exact duplicates within one class", ["copies", "files"], rows))
    if report["conflict_groups"]:
        rows = [["\n".join(_short(p, root) for p in g)] for g in report["conflict_groups"]]
        by_pair = "; ".join(f"{k}: {n}" for k, n in report["conflicts_by_classes"].items())
        tables.append(_table("Label conflicts: identical files in different classes", ["files"],
                             rows, caption=f"groups by classes: {escape(by_pair)}"))
    if report["test_overlap"]:
        rows = [[_short(o["test_path"], test_root), escape(o["test_class"]),
                 "\n".join(_short(p, root) for p in o["train_paths"]),
                 escape(", ".join(o["train_classes"]))] for o in report["test_overlap"]]
        tables.append(_table("Leakage: test files whose exact content is in the training folder",
                             ["test file", "test class", "training files", "training classes"],
                             rows))
    return tables


def _labels(first: str, second: str) -> str:
    return "same" if first == second else f"[yellow]{escape(first)} / {escape(second)}[/]"


def _near_tables(report: dict[str, Any]) -> list[Table]:
    """Files that training takes for one picture without their being byte-identical."""
    root, test_root = report["root"], report["test_dir"]
    distance = report["cleaning"]["near_duplicate_distance"]
    label = (f"the same picture as training matches it: perceptual hash within {distance} bits and "
             "matching 16x16 thumbnails, not byte-identical")
    tables = []
    if report["near_duplicates"]:
        rows = [[str(p["distance"]), _short(p["paths"][0], root), _short(p["paths"][1], root),
                 _labels(*p["classes"])] for p in report["near_duplicates"]]
        tables.append(_table("Near duplicates", ["distance", "file", "file", "labels"], rows,
                             caption=label))
    if report.get("test_near_overlap"):
        rows = [[str(p["distance"]), _short(p["test_path"], test_root),
                 _short(p["train_path"], root), _labels(p["test_class"], p["train_class"])]
                for p in report["test_near_overlap"]]
        tables.append(_table("Near leakage: test files showing a training picture",
                             ["distance", "test file", "training file", "labels"], rows,
                             caption=label))
    return tables


def _verdict(report: dict[str, Any]) -> str:
    counts = {
        "unreadable files": len(report["unreadable"]),
        "nested folders": len(report["nested"]),
        "files outside classes": len(report["outside_classes"]),
        "duplicate groups": len(report["duplicate_groups"]),
        "label conflict groups": len(report["conflict_groups"]),
        "test files also in training": len(report["test_overlap"]),
        "near-duplicate pairs": len(report["near_duplicates"]),
        "near-leakage pairs": len(report.get("test_near_overlap", [])),
        "label conflicts across sources": len(report["label_conflicts"]) if len(report["sources"]) > 1 else 0,
        "images held out": report["cleaning"]["dropped"]["holdout_overlap"],
    }
    found = [f"{n} {what}" for what, n in counts.items() if n]
    if not found:
        return "[green]No problems found.[/]"
    return "[yellow]Found:[/] " + ", ".join(found)


def _sources_table(report: dict[str, Any]) -> Table:
    """What training would keep of each source, and why the rest goes."""
    table = Table(title="Sources (as training de-duplicates them)")
    for column in ("source", "format", "images", "kept", "copies of another", "label conflicts",
                   "held out"):
        table.add_column(column, justify="left" if column in ("source", "format") else "right")
    for source in report["sources"]:
        table.add_row(escape(source["name"]), source["format"],
                      *(str(source.get(key, 0)) for key in ("images", "kept", "duplicates", "conflicts",
                                                              "holdout")))
    return table


def _kept(conflict: dict[str, Any]) -> str:
    """What training keeps of a conflicting picture."""
    if not conflict["kept"]:
        return "dropped"
    return "\n".join(escape(f"{Path(k['path']).name} as {k['label']}") for k in conflict["kept"])


def _conflict_table(report: dict[str, Any]) -> Table:
    rows = [["\n".join(escape(f"{path} ({source})") for path, source in
                        zip(c["paths"], c["sources"], strict=True)),
             escape(" / ".join(c["labels"])), _kept(c)] for c in report["label_conflicts"]]
    return _table("Label conflicts: one picture (same bytes, ISIC id or content) with different "
                  "labels", ["copies", "labels", "training keeps"], rows,
                  caption="data.drop_conflicts drops them unless data.trust_sources settles them")


def _cleaning_line(report: dict[str, Any]) -> str:
    """The config's cleaning rules the report follows."""
    cleaning = report["cleaning"]
    distance = cleaning["near_duplicate_distance"]
    near = "exact copies only" if distance is None else f"near duplicates within {distance} bits"
    conflicts = "dropped" if cleaning["drop_conflicts"] else "kept once per label"
    trusted = ", ".join(cleaning["trust_sources"]) or "none"
    return (f"cleaning as train does: {near}; label conflicts {conflicts} "
            f"({cleaning['conflicts_resolved']} settled by trusted sources: {trusted}); "
            f"holdout folders: {len(cleaning['holdout_dirs'])}")


def _print_report(report: dict[str, Any]) -> None:
    out.print(_class_table(report))
    out.print(escape(_cleaning_line(report)), highlight=False)
    if len(report["sources"]) > 1 or report["label_conflicts"] or report["cleaning"]["holdout_dirs"]:
        out.print(_sources_table(report))
    if report["label_conflicts"]:
        out.print(_conflict_table(report))
    for line in _image_lines(report):
        out.print(escape(line), highlight=False)
    if report["test_dir"] is not None:
        test = report["test"]
        out.print(f"test folder {escape(test['root'])}: {test['total']} images in "
                  f"{len(test['classes'])} classes, {len(test['unreadable'])} unreadable",
                  highlight=False)
    for table in [*_problem_tables(report), *_near_tables(report)]:
        out.print(table)
    out.print(_verdict(report), highlight=False)


@handle_errors
def inspect_dataset(
    data: Annotated[list[str] | None, typer.Argument(
        metavar="SOURCE",
        help="Data sources (PATH or NAME=PATH), added to the config's data.sources as `train --data` "
             "adds them: folders with one subfolder per class, or with labels.csv beside images/ "
             "(several are checked together for shared images and label conflicts).")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", "-c",
        help="The YAML config `train` would take (a path or a bundled name): the report follows "
             "its data section (sources, classes, image size, near-duplicate distance, conflicts, "
             "trusted sources, holdout folders) (default: baseline.yaml).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="KEY=VALUE",
        help="Override a config value, e.g. data.near_duplicate_distance=null (repeatable).")] = None,
    test_dir: Annotated[str | None, typer.Option(
        "--test-dir", metavar="PATH",
        help="Test set to check for leakage: a folder per class, or labels.csv beside images/.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a class distribution bar chart to this file (e.g. classes.png).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Report class balance, unreadable files, duplicates, label conflicts and test leakage, and
    what `train` with the same config keeps of each source and class.

    Exits 0 whenever the sources could be scanned, even if it found problems.
    """
    from melanoma_cli.config import load_config
    from melanoma_cli.data.inspection import inspect_dataset as run_inspection
    from melanoma_cli.data.sources import parse_source

    settings = load_config(config or "baseline.yaml", overrides or [])
    sources = [parse_source(text) for text in data or []]
    if not sources and not settings.data.sources:
        raise typer.BadParameter("missing (required unless the config lists data.sources)",
                                 param_hint="'SOURCE...'")
    if plot is not None and not plot.parent.is_dir():
        raise MelanomaError(f"cannot write plot '{plot}': folder '{plot.parent}' does not exist")
    names = [s.path for s in [*settings.data.sources, *sources]]
    err.print(f"[dim]scanning {escape(', '.join(names))}[/]", highlight=False)
    test = parse_source(test_dir) if test_dir is not None else None
    report = run_inspection(sources, settings.data, test)
    if plot is not None:
        from melanoma_cli.utils.plots import plot_class_distribution

        try:
            plot_class_distribution(report["classes"], plot)
        except (OSError, ValueError) as exc:
            raise MelanomaError(f"cannot write plot '{plot}': {exc}") from exc
        err.print(f"[dim]class distribution written to {escape(str(plot))}[/]", highlight=False)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
