"""`melanoma info`: the model card summary of the bundled model (or of --model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from melanoma_cli.cli.common import JsonOption, handle_errors, out, print_json
from melanoma_cli.utils.notice import DISCLAIMER


def _fmt(value: Any, interval: list[float] | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f"{text} ({interval[0]:.2f}-{interval[1]:.2f})" if interval else text


def _validation_rows(validation: dict) -> list[tuple[str, str]]:
    """Headline metrics from an evaluate report, or from a training run's metrics.json."""
    report = validation.get("validation", validation)
    rows = [
        ("validation images", _fmt(report.get("n"))),
        ("accuracy", _fmt(report.get("accuracy"), report.get("accuracy_ci"))),
        ("balanced accuracy", _fmt(report.get("balanced_accuracy"), report.get("balanced_accuracy_ci"))),
    ]
    if "macro_auc" in report:
        rows.append(("macro AUC", _fmt(report["macro_auc"], report.get("macro_auc_ci"))))
    melanoma = report.get("melanoma")
    if melanoma:
        rows += [
            ("melanoma sensitivity", _fmt(melanoma["sensitivity"], melanoma.get("sensitivity_ci"))),
            ("melanoma specificity", _fmt(melanoma["specificity"], melanoma.get("specificity_ci"))),
            ("melanoma AUC", _fmt(melanoma["auc"], melanoma.get("auc_ci"))),
        ]
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _int8_rows(int8: dict) -> list[tuple[str, str]]:
    """The int8 export: whether `auto` runs it, and its equivalence with the float export per set."""
    report = int8["report"]
    if report is None:
        return [("int8 export", escape(f"{int8['path']} (no equivalence report: used only with "
                                       "--engine litert-int8)"))]
    verdict = "passes: the default LiteRT engine" if int8["default_engine"] else (
        "does not pass: auto keeps float" if report.get("passes") is False
        else "report is for another file: auto keeps float")
    rows = [("int8 export", escape(f"{int8['path']} ({verdict})"))]
    for item in report.get("sets", []):
        before, after = item["float"], item["int8"]
        rows.append((f"int8 vs float: {escape(Path(item['test_set']).name)}", escape(
            f"n={item['n']}; top-1 agreement {_pct(item['top1_agreement'])}, melanoma flag "
            f"{_pct(item['melanoma_flag_agreement'])}, max |p diff| {item['max_abs_diff']:.3f}; "
            f"balanced accuracy {_fmt(before['balanced_accuracy'])} -> {_fmt(after['balanced_accuracy'])}, "
            f"melanoma AUC {_fmt(before['melanoma_auc'])} -> {_fmt(after['melanoma_auc'])} "
            f"(melanoma n={before['melanoma_n']})")))
    failing = [reason for reason in report.get("reasons", []) if not reason.startswith("ok")]
    if failing:
        rows.append(("int8 fails on", escape("; ".join(failing))))
    return rows


@handle_errors
def info(
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Run folder or .keras file \\[default: the bundled model].")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a model's card: classes, input size, melanoma threshold, training and validation metrics."""
    from melanoma_cli.runtime.model_card import model_summary

    summary = model_summary(model)
    if as_json:
        print_json(summary)
        return
    table = Table(title="bundled default model" if summary["bundled"] else escape(summary["model"]),
                  show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")  # long paths wrap, never cut short
    table.add_row("classes", escape(", ".join(summary["classes"])))
    table.add_row("input", f"{summary['image_size']}x{summary['image_size']} RGB")
    threshold = summary["melanoma_threshold"]
    table.add_row("melanoma flag", "argmax" if threshold is None else f"p({summary['melanoma_class']}) >= "
                  f"{threshold:.3f}")
    table.add_row("status", summary["status"])
    for key in ("data_dir", "epochs_run", "train_seconds"):
        if key in summary["training"]:
            table.add_row(key.replace("_", " "), escape(str(summary["training"][key])))
    if summary["validation"]:
        table.add_section()
        for name, value in _validation_rows(summary["validation"]):
            table.add_row(name, value)
    if summary.get("int8"):
        table.add_section()
        for name, value in _int8_rows(summary["int8"]):
            table.add_row(name, value)
    if summary["model_card"]:
        table.add_section()
        table.add_row("model card", escape(summary["model_card"]))
    out.print(table)
    out.print(f"[dim]{DISCLAIMER}[/]")
