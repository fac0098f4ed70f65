"""`melanoma info` and the validation report: outside sets first, no interval on what was chosen."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.runtime.default_model import default_model_dir
from melanoma_cli.stats.metrics import CHOSEN_HERE, selection_report

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_selection_report_drops_the_intervals_of_what_was_chosen():
    y_true = np.array([0] * 10 + [1] * 20)
    probabilities = np.tile([0.5, 0.5], (30, 1))
    probabilities[:, 0] = np.r_[np.linspace(0.9, 0.3, 10), np.linspace(0.6, 0.0, 20)]
    probabilities[:, 1] = 1 - probabilities[:, 0]
    classes = ["melanoma", "nevus"]
    report = selection_report(y_true, probabilities, classes, "melanoma", 0.45, "val_balanced_accuracy", 100)
    assert report["chosen_here"] == CHOSEN_HERE
    assert set(report["fixed_here"]) == {"melanoma.sensitivity", "balanced_accuracy"}
    assert report["melanoma"]["sensitivity"] == pytest.approx(0.7)  # 7 of 10 at p >= 0.45
    assert report["melanoma"]["sensitivity_ci"] is None and report["balanced_accuracy_ci"] is None
    assert report["melanoma"]["specificity_ci"] is not None and report["accuracy_ci"] is not None
    assert report["macro_auc_ci"] is not None
    by_loss = selection_report(y_true, probabilities, classes, "melanoma", None, "val_loss", 100)
    assert by_loss["fixed_here"] == {}  # argmax flags and a loss the report does not hold
    assert by_loss["melanoma"]["sensitivity_ci"] is not None and by_loss["balanced_accuracy_ci"] is not None


def test_bundled_info_shows_the_outside_sets_first_and_no_interval_on_chosen_figures():
    result = runner.invoke(app, ["info"], env=WIDE)
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.index("Derm7pt report part") < text.index("ISIC 2018 test") < text.index(CHOSEN_HERE)
    assert "development (chose something: optimistic)" in text and "report (chose nothing)" in text
    sensitivity = next(line for line in text.splitlines() if "melanoma sensitivity" in line
                       and "no interval" in line)
    assert "0.851, no interval: fixed by construction" in sensitivity
    assert "0.599, no interval: the checkpoint was chosen by val_balanced_accuracy" in text
    assert "0.679 (0.63-0.73)" in text  # the Derm7pt report part's melanoma AUC with its interval
    sources = [line for line in text.splitlines() if "training source" in line]
    for line, name in zip(sources, ("isic9 (isic9/Train)", "ham10000 (ham10000)", "isic2017 (isic2017)"),
                          strict=True):
        assert name in line
    assert "with --tta >= 0.159" in text
    assert not (default_model_dir() / "validation_report.json").exists()


def test_bundled_info_json_holds_the_outside_sets_and_the_validation_report():
    summary = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    sets = {item["name"]: item for item in summary["outside_sets"]}
    assert [(item["role"], item["n"], item["melanomas"]) for item in sets.values()] == [
        ("report", 577, 151), ("development", 386, 101), ("development", 3711, 871),
        ("development", 1509, 171)]
    derm7pt = sets["Derm7pt report part"]["metrics"]
    assert derm7pt["melanoma_sensitivity"] == pytest.approx(141 / 151)
    low, high = derm7pt["melanoma_sensitivity_ci"]
    assert low < 141 / 151 < high
    validation = summary["validation"]
    assert validation["chosen_here"] == CHOSEN_HERE and validation["melanoma"]["sensitivity_ci"] is None
    assert validation["melanoma"]["tp"] == 239 and validation["n"] == 1953


@pytest.mark.slow
def test_train_writes_the_full_report_marked_as_chosen_here(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text(encoding="utf-8"))
    validation = metrics["validation"]
    assert validation["chosen_here"] == CHOSEN_HERE and validation["n"] == 6
    assert validation["melanoma"]["sensitivity"] >= 0.85 and validation["melanoma"]["sensitivity_ci"] is None
    assert validation["balanced_accuracy_ci"] is None  # the default monitor chose the checkpoint
    assert validation["accuracy_ci"] is not None and validation["melanoma"]["specificity_ci"] is not None
    assert validation["confusion_matrix"] and validation["per_class"]["nevus"]["auc"] is not None
    result = runner.invoke(app, ["info", "--model", str(trained_run)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "no interval: fixed by construction" in result.output and CHOSEN_HERE in result.output


@pytest.mark.slow
def test_info_lists_every_training_source(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    info = json.loads((run / "model.json").read_text(encoding="utf-8"))
    first = info["training"]["sources"][0]
    info["training"]["sources"].append({**first, "path": str(tmp_path / "second"), "name": "second"})
    (run / "model.json").write_text(json.dumps(info), encoding="utf-8")
    result = runner.invoke(app, ["info", "--model", str(run)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"{first['name']} ({first['path']})" in result.output
    assert f"second ({tmp_path / 'second'})" in result.output


def test_an_outside_set_with_an_unknown_role_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(default_model_dir(), run, ignore=shutil.ignore_patterns("*.tflite"))
    info = json.loads((run / "model.json").read_text(encoding="utf-8"))
    info["outside_sets"][1]["role"] = "test"
    (run / "model.json").write_text(json.dumps(info), encoding="utf-8")
    result = runner.invoke(app, ["info", "--model", str(run)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: model info '{run / 'model.json'}': outside set 'Derm7pt selection part' has role 'test', "
        "not one of development, report"]
