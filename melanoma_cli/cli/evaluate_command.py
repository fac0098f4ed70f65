"""`melanoma evaluate`: a model's metrics on a folder-per-class test set, with 95% intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
from melanoma_cli.utils.class_names import abbreviations


def _value(value: float | None, interval: list[float] | None = None) -> str:
    """'0.812 (0.57-0.93)', or '-' where undefined."""
    if value is None:
        return "-"
    if interval is None:
        return f"{value:.3f}"
    return f"{value:.3f} [dim]({interval[0]:.2f}-{interval[1]:.2f})[/]"


def _class_table(report: dict, title: str) -> Table:
    table = Table(title=title, caption="in brackets: 95% confidence interval")
    for name in ("class", "n", "accuracy (recall)", "precision", "F1", "AUC (one-vs-rest)"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(escape(name), str(row["n"]), _value(row["accuracy"], row["accuracy_ci"]),
                      _value(row["precision"], row["precision_ci"]), _value(row["f1"]),
                      _value(row["auc"], row["auc_ci"]))
    table.add_section()
    table.add_row("accuracy", str(report["n"]), _value(report["accuracy"], report["accuracy_ci"]))
    table.add_row("balanced accuracy", "",
                  _value(report["balanced_accuracy"], report["balanced_accuracy_ci"]))
    table.add_row("macro AUC", "", "", "", "", _value(report["macro_auc"], report["macro_auc_ci"]))
    return table


def _melanoma_table(melanoma: dict) -> Table:
    rule = "argmax" if melanoma["threshold"] is None else f"p >= {melanoma['threshold']:.3g}"
    table = Table(title=f"{escape(melanoma['class'])} vs rest (flag: {rule})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("from", justify="right")
    tp, fn, tn, fp = (melanoma[key] for key in ("tp", "fn", "tn", "fp"))
    table.add_row("sensitivity", _value(melanoma["sensitivity"], melanoma["sensitivity_ci"]),
                  f"TP {tp} / {tp + fn}")
    table.add_row("specificity", _value(melanoma["specificity"], melanoma["specificity_ci"]),
                  f"TN {tn} / {tn + fp}")
    table.add_row("AUC", _value(melanoma["auc"], melanoma["auc_ci"]), "")
    table.add_row("missed (FN)", str(fn), "")
    table.add_row("false alarms (FP)", str(fp), "")
    return table


def _confusion_table(report: dict, short: dict[str, str]) -> Table:
    """Counts under abbreviated class names, so that nine classes fit in 80 columns."""
    table = Table(title="Confusion matrix (rows: true class, columns: predicted)")
    table.add_column("true \\ predicted", no_wrap=True)
    for name in report["classes"]:
        table.add_column(escape(short[name]), justify="right", no_wrap=True)
    for name, row in zip(report["classes"], report["confusion_matrix"], strict=True):
        table.add_row(escape(short[name]), *(str(count) for count in row))
    return table


def _legend(short: dict[str, str], width: int) -> list[str]:
    """'AK = actinic keratosis' items packed into lines of `width` characters, never split."""
    lines: list[str] = []
    line = ""
    for name, code in short.items():
        item = f"{code} = {name}"
        if line and len(line) + len(item) + 2 > width:
            lines.append(line + ",")
            line = item
        else:
            line = f"{line}, {item}" if line else item
    return [*lines, line]


def _layout_warnings(nested: list[Path], outside_classes: list[Path]) -> None:
    """What the test folder holds beside its class folders' images (ignored, like in training)."""
    for paths, what in ((nested, "folder(s) nested below a class folder"),
                        (outside_classes, "file(s) outside any class folder")):
        if paths:
            warn(f"ignored {len(paths)} {what}:")
            for path in paths:
                err.print(f"  {path}", highlight=False, markup=False, soft_wrap=True)


@handle_errors
def evaluate(
    test_dir: Annotated[Path, typer.Argument(
        metavar="TEST_SET",
        help="Test set: a folder with one subfolder per class, or with labels.csv beside images/ "
             "(or a labels CSV file).")],
    model: ModelOption = None,
    as_json: JsonOption = False,
    report_dir: Annotated[Path | None, typer.Option(
        "--report-dir", metavar="DIR",
        help="Also write metrics.json, predictions.csv and confusion_matrix.png "
             "to this folder.")] = None,
    threshold: ThresholdOption = None,
    batch_size: BatchSizeOption = 64,
    engine: EngineOption = "auto",
    taxonomy: Annotated[str, typer.Option(
        "--taxonomy", metavar="auto|isic2018|none",
        help="auto: score a coarser test set in its own classes (ISIC 2018's 7, or "
             "'A or B' labels), summing the probabilities of merged model classes; "
             "isic2018: always; none: never.")] = "auto",
    merge: Annotated[list[str], typer.Option(
        "--merge", metavar="CLASS=A+B", help="Score test class CLASS as the sum of model classes "
                                             "A and B (repeatable).")] = [],  # noqa: B006
    tta: TTAOption = False,
) -> None:
    """Evaluate a model on a labelled test folder: per-class and melanoma metrics with 95% CIs."""
    from melanoma_cli.inference.evaluation import evaluate_folder, prepare_report_dir, write_report
    from melanoma_cli.inference.prediction import resolve_threshold
    from melanoma_cli.inference.taxonomy import TAXONOMIES, parse_merge
    from melanoma_cli.runtime.loading import load_classifier

    if taxonomy not in ("auto", "none", *TAXONOMIES):
        raise typer.BadParameter(f"'{taxonomy}' is not one of auto, none, {', '.join(TAXONOMIES)}",
                                 param_hint="'--taxonomy'")
    merges = dict(parse_merge(text) for text in merge)
    if report_dir is not None:
        prepare_report_dir(report_dir, test_dir)
    classifier = load_classifier(model, engine, note=warn, tta=tta)
    announce_model(classifier, resolve_threshold(classifier, threshold), as_json)
    with image_progress("evaluating") as hook:
        result = evaluate_folder(classifier, test_dir, threshold, batch_size, hook,
                                 taxonomy=taxonomy, merges=merges)
    _layout_warnings(result.nested, result.outside_classes)
    if result.skipped:
        warn(f"skipped {len(result.skipped)} unreadable file(s):")
        for item in result.skipped:
            err.print(f"  {item.path}: {item.reason}", highlight=False, markup=False,
                      soft_wrap=True)
    if report_dir is not None:
        write_report(result, report_dir)
    report = result.report
    if as_json:
        print_json(result.summary())
    else:
        out.print(_class_table(report, f"Evaluation on {escape(str(test_dir))} (n={report['n']})"))
        for name, members in report["taxonomy"]["merged"].items():
            out.print(f"[dim]{escape(name)} = sum of {escape(' + '.join(members))}[/]", highlight=False)
        if report["melanoma"] is not None:
            out.print(_melanoma_table(report["melanoma"]))
        short = abbreviations(report["classes"])
        out.print(_confusion_table(report, short))
        for line in _legend(short, out.width):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    if report_dir is not None:
        err.print(f"report written to {report_dir}", highlight=False, markup=False)
