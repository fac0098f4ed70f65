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


HEADLINE = (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("macro AUC", "macro_auc"),
            ("melanoma AUC", "melanoma_auc"), ("melanoma sensitivity", "melanoma_sensitivity"),
            ("melanoma specificity", "melanoma_specificity"))
ROLES = {"development": "development (chose something: optimistic)", "report": "report (chose nothing)"}


def _headline(report: dict) -> dict:
    """The flat headline figures (as model.json 'outside_sets' stores them) of an evaluate report."""
    melanoma = report.get("melanoma") or {}
    figures = {"n": report.get("n"), "melanomas": melanoma.get("n")}
    for key in ("accuracy", "balanced_accuracy", "macro_auc"):
        figures.update({key: report.get(key), f"{key}_ci": report.get(f"{key}_ci")})
    for key in ("auc", "sensitivity", "specificity"):
        figures[f"melanoma_{key}"] = melanoma.get(key)
        figures[f"melanoma_{key}_ci"] = melanoma.get(f"{key}_ci")
    figures["melanoma_threshold"] = melanoma.get("threshold")
    return figures


def _figure_rows(figures: dict, fixed: dict[str, str], indent: str = "") -> list[tuple[str, str]]:
    """One row per headline figure present: its interval, or why it has none."""
    rows = []
    for name, key in HEADLINE:
        if figures.get(key) is None:
            continue
        value = (f"{_fmt(figures[key])}, no interval: {escape(fixed[key])}" if key in fixed
                 else _fmt(figures[key], figures.get(f"{key}_ci")))
        rows.append((indent + name, value))
    return rows


def _outside_rows(sets: list[dict]) -> list[tuple[str, str]]:
    """Each outside test set: what it is, what it chose, and its figures."""
    rows = []
    for item in sets:
        melanomas = "" if item.get("melanomas") is None else f", {item['melanomas']} melanomas"
        rows.append((escape(item["name"]), escape(f"{item['n']} images{melanomas}; "
                                                  f"{ROLES.get(item['role'], item['role'])}")))
        rows += _figure_rows(item["metrics"], {}, indent="  ")
    return rows


def _validation_rows(report: dict) -> list[tuple[str, str]]:
    """Headline metrics of the validation split; figures fixed there by a choice get no interval."""
    figures = _headline(report)
    melanomas = "" if figures["melanomas"] is None else f", {figures['melanomas']} melanomas"
    chosen = f"; {report['chosen_here']}" if report.get("chosen_here") else ""
    fixed = {key.replace(".", "_"): reason for key, reason in report.get("fixed_here", {}).items()}
    return [("validation", f"{_fmt(figures['n'])} images{melanomas}{escape(chosen)}"),
            *_figure_rows(figures, fixed, indent="  ")]


def _source_rows(training: dict) -> list[tuple[str, str]]:
    """Every training source (name and folder), or the data folder of an older run."""
    sources = training.get("sources")
    if isinstance(sources, list) and sources:
        return [("training source", escape(f"{source.get('name') or source['path']} ({source['path']})"))
                for source in sources if isinstance(source, dict) and "path" in source]
    return [("data dir", escape(str(training["data_dir"])))] if "data_dir" in training else []


def _adaptation_rows(record: dict) -> list[tuple[str, str]]:
    """Which clinic sample the model was adapted to, and what its threshold promises there."""
    classes = ", ".join(f"{name} {n}" for name, n in record["classes"].items())
    promise = [f"{what} {_fmt(record[what]['value'], record[what]['ci95'])} (n {record[what]['n']})"
               for what in ("sensitivity", "specificity")]
    return [("adapted to", escape(f"{record['sample']} ({record['images']} images: {classes})")),
            ("adapted from", escape(record["base_model"])),
            (f"on the sample (target {record['target_sensitivity']:.2f})",
             escape("; ".join(promise) + ", out of fold, 95% intervals"))]


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
        "--model", "-m", help="Run folder or .keras file (default: the bundled model).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a model's card: classes, input size, melanoma thresholds, training sources, results on
    outside test sets, then on the validation split that chose the checkpoint and threshold."""
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
    threshold, threshold_tta = summary["melanoma_threshold"], summary["melanoma_threshold_tta"]
    rule = "argmax" if threshold is None else f"p({summary['melanoma_class']}) >= {threshold:.3f}"
    if threshold_tta is not None:
        rule += f"; with --tta >= {threshold_tta:.3f}"
    table.add_row("melanoma flag", escape(rule))
    table.add_row("status", summary["status"])
    for name, value in _source_rows(summary["training"]):
        table.add_row(name, value)
    for key in ("epochs_run", "train_seconds"):
        if key in summary["training"]:
            table.add_row(key.replace("_", " "), escape(str(summary["training"][key])))
    adaptation = summary["training"].get("adaptation")
    if isinstance(adaptation, dict):
        table.add_section()
        for name, value in _adaptation_rows(adaptation):
            table.add_row(name, value)
    if summary["outside_sets"]:
        table.add_section()
        for name, value in _outside_rows(summary["outside_sets"]):
            table.add_row(name, value)
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
