"""`melanoma inspect-dataset`: a health report of a folder-per-class dataset (no TensorFlow)."""

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
    table = Table(title=f"Classes in {escape(report['root'])}")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    for name, count in report["classes"].items():
        table.add_row(escape(name), str(count), f"{report['share'][name]:.1%}")
    table.add_section()
    ratio = report["imbalance_ratio"]
    table.add_row("total", str(report["total"]), "")
    table.add_row("imbalance (largest/smallest)", "-" if ratio is None else f"{ratio:.2f}", "")
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
    """Perceptual look-alikes: a separate, clearly labelled list (they may be legitimate)."""
    root, test_root, threshold = report["root"], report["test_dir"], report["near_threshold"]
    label = f"perceptual hash, Hamming distance <= {threshold}, not byte-identical"
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
        tables.append(_table("Near leakage: test files resembling training files",
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
    }
    found = [f"{n} {what}" for what, n in counts.items() if n]
    if not found:
        return "[green]No problems found.[/]"
    return "[yellow]Found:[/] " + ", ".join(found)


def _sources_table(report: dict[str, Any]) -> Table:
    """What training would keep of each source, and why the rest goes."""
    table = Table(title="Sources (as training de-duplicates them)")
    for column in ("source", "format", "images", "kept", "copies of another", "label conflicts"):
        table.add_column(column, justify="left" if column in ("source", "format") else "right")
    for source in report["sources"]:
        table.add_row(escape(source["name"]), source["format"], str(source.get("images", 0)),
                      str(source.get("kept", 0)), str(source.get("duplicates", 0)),
                      str(source.get("conflicts", 0)))
    return table


def _conflict_table(report: dict[str, Any]) -> Table:
    rows = [["\n".join(escape(f"{path} ({source})") for path, source in
                        zip(c["paths"], c["sources"], strict=True)),
             escape(" / ".join(c["labels"]))] for c in report["label_conflicts"]]
    return _table("Label conflicts: one picture (same bytes, ISIC id or content) with different "
                  "labels", ["copies", "labels"], rows,
                  caption="training drops these (data.drop_conflicts) unless data.trust_sources settles them")


def _print_report(report: dict[str, Any]) -> None:
    out.print(_class_table(report))
    if len(report["sources"]) > 1 or report["label_conflicts"]:
        out.print(_sources_table(report))
    if len(report["sources"]) > 1 and report["label_conflicts"]:
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
    data: Annotated[list[Path], typer.Argument(
        help="Data sources: folders with one subfolder per class, or with labels.csv beside "
             "images/ (several are checked together for shared images and label conflicts).")],
    test_dir: Annotated[Path | None, typer.Option(
        "--test-dir", help="Test folder (one subfolder per class) to check for leakage.")] = None,
    near_threshold: Annotated[int, typer.Option(
        "--near-threshold", min=0, max=64,
        help="Largest perceptual-hash Hamming distance (bits of 64) reported as a near "
             "duplicate; 0 turns the near-duplicate search off.")] = 4,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a class distribution bar chart to this file (e.g. classes.png).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Report class balance, unreadable files, duplicates, label conflicts and test leakage.

    Exits 0 whenever the folder could be scanned, even if it found problems.
    """
    from melanoma_cli.data.inspection import inspect_dataset as run_inspection

    if plot is not None and not plot.parent.is_dir():
        raise MelanomaError(f"cannot write plot '{plot}': folder '{plot.parent}' does not exist")
    err.print(f"[dim]scanning {escape(', '.join(map(str, data)))}[/]", highlight=False)
    report = run_inspection(list(data), test_dir, near_threshold)
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
