"""`melanoma evaluate`: the core on a stand-in classifier, and the CLI on the tiny trained model."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import CLASSES, FakeClassifier, make_dataset
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.inference.evaluation import evaluate_folder

runner = CliRunner()
REQUIRED = {"n", "classes", "accuracy", "balanced_accuracy", "macro_auc", "per_class", "melanoma",
            "confusion_matrix"}


def evaluate(*args) -> object:
    return runner.invoke(app, ["evaluate", *map(str, args)])


@pytest.fixture(scope="module")
def test_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 images per class of the trained model, plus a text file posing as a JPEG."""
    data = make_dataset(tmp_path_factory.mktemp("evaluate") / "test", per_class=4)
    (data / "nevus" / "notes.jpg").write_text("not an image")
    return data


@pytest.fixture(scope="module")
def json_run(trained_run: Path, test_set: Path, tmp_path_factory: pytest.TempPathFactory):
    report_dir = tmp_path_factory.mktemp("report") / "report"
    result = evaluate(test_set, "--model", trained_run, "--json", "--report-dir", report_dir)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr, report_dir


def test_classes_are_matched_by_name_not_by_folder_order(tmp_path):
    test_dir = make_dataset(tmp_path / "test", per_class=2, classes=("melanoma", "nevus"))
    (test_dir / "nevus" / "extra.jpg").write_bytes((test_dir / "nevus" / "nev_000.jpg").read_bytes())
    model = FakeClassifier(["nevus", "dermatofibroma", "melanoma"], favourite=2)
    result = evaluate_folder(model, test_dir, batch_size=2, resamples=50)
    report = result.report
    assert report["classes"] == model.classes
    assert {name: row["n"] for name, row in report["per_class"].items()} == {
        "nevus": 3, "dermatofibroma": 0, "melanoma": 2}
    assert report["confusion_matrix"] == [[0, 0, 3], [0, 0, 0], [0, 0, 2]]
    melanoma = report["melanoma"]
    assert (melanoma["tp"], melanoma["fn"], melanoma["tn"], melanoma["fp"]) == (2, 0, 0, 3)
    assert model.batches == [2, 2, 1]
    assert result.paths[0].parent.name == "melanoma"


def test_json_report(json_run, trained_run):
    payload, stderr, _ = json_run
    assert set(payload) >= REQUIRED
    assert payload["n"] == 12 and payload["classes"] == list(CLASSES)
    assert [sum(row) for row in payload["confusion_matrix"]] == [4, 4, 4]
    for row in payload["per_class"].values():
        assert {"n", "accuracy", "precision", "f1", "auc"} <= set(row) and row["n"] == 4
    melanoma = payload["melanoma"]
    assert {"sensitivity", "specificity", "auc", "tp", "fn", "tn", "fp", "threshold"} <= set(melanoma)
    assert melanoma["tp"] + melanoma["fn"] == 4 and melanoma["tn"] + melanoma["fp"] == 8
    info = json.loads((trained_run / "model.json").read_text())
    assert melanoma["threshold"] == info["melanoma_threshold"]
    assert [Path(item["path"]).name for item in payload["skipped"]] == ["notes.jpg"]
    assert "model: " in stderr and "notes.jpg" in stderr


def test_report_dir_files(json_run):
    payload, _, report_dir = json_run
    assert json.loads((report_dir / "metrics.json").read_text()) == payload
    with (report_dir / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    assert set(rows[0]) == {"path", "true", "prediction", "melanoma_flag", *CLASSES}
    assert sum(row["true"] == row["prediction"] for row in rows) == round(payload["accuracy"] * 12)
    assert (report_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_output(trained_run, test_set):
    result = evaluate(test_set, "--model", trained_run / "model.keras", "--batch-size", "5")
    assert result.exit_code == 0, result.output
    for text in ("model: ", "balanced", "macro AUC", "melanoma vs rest", "sensitivity",
                 "specificity", "Confusion matrix", "95% confidence interval"):
        assert text in result.stdout
    assert "skipped 1 unreadable file" in result.stderr


@pytest.mark.parametrize(("threshold", "counts"), [("0", (4, 0, 0, 8)), ("1", (0, 4, 8, 0))])
def test_threshold_decides_the_melanoma_counts(trained_run, test_set, threshold, counts):
    result = evaluate(test_set, "--model", trained_run, "--json", "--melanoma-threshold", threshold)
    assert result.exit_code == 0, result.output
    melanoma = json.loads(result.stdout)["melanoma"]
    assert (melanoma["tp"], melanoma["fn"], melanoma["tn"], melanoma["fp"]) == counts
    assert melanoma["threshold"] == float(threshold)


def test_model_class_missing_from_the_test_folder_is_n0(trained_run, tmp_path):
    test_dir = make_dataset(tmp_path / "test", per_class=2, classes=("melanoma", "nevus"))
    result = evaluate(test_dir, "--model", trained_run, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    absent = payload["per_class"]["vascular lesion"]
    assert absent["n"] == 0 and absent["accuracy"] is None and absent["auc"] is None
    assert payload["confusion_matrix"][2] == [0, 0, 0]


def test_unknown_test_class_is_refused(trained_run, tmp_path):
    test_dir = make_dataset(tmp_path / "test", per_class=1, classes=("melanoma", "dermatofibroma"))
    result = evaluate(test_dir, "--model", trained_run)
    assert result.exit_code == 1
    assert "class folder(s) the model does not know: 'dermatofibroma'" in result.stderr
    assert "model classes: melanoma, nevus, vascular lesion" in result.stderr


def test_input_errors(trained_run, test_set, tmp_path):
    cases = [
        ((tmp_path / "absent", "--model", trained_run), "does not exist"),
        ((test_set, "--model", tmp_path / "none.keras"), "does not exist"),
        ((test_set, "--model", trained_run, "--report-dir", test_set / "report"),
         "refusing to write the report into the test folder"),
        ((test_set, "--model", trained_run, "--report-dir", trained_run), "run folder"),
    ]
    (tmp_path / "a-file").write_text("")
    cases.append(((test_set, "--model", trained_run, "--report-dir", tmp_path / "a-file"),
                  "cannot be created"))
    for args, message in cases:
        result = evaluate(*args)
        assert result.exit_code == 1, (args, result.output)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: ") and message in last
    assert not (test_set / "report").exists()


def test_no_readable_images(trained_run, tmp_path):
    (tmp_path / "test" / "melanoma").mkdir(parents=True)
    (tmp_path / "test" / "melanoma" / "a.jpg").write_text("text")
    result = evaluate(tmp_path / "test", "--model", trained_run)
    assert result.exit_code == 1
    assert "has no readable images" in result.stderr


def test_predictions_csv_has_unix_line_endings_and_predict_column_names(json_run):
    _, _, report_dir = json_run
    data = (report_dir / "predictions.csv").read_bytes()
    assert b"\r\n" not in data and data.count(b"\n") == 13
    assert data.split(b"\n")[0].split(b",")[:3] == [b"path", b"true", b"prediction"]


def test_nested_folders_and_loose_files_are_reported(trained_run, tmp_path):
    test_dir = make_dataset(tmp_path / "test", per_class=2)
    (test_dir / "nevus" / "old").mkdir()
    shutil.copy(test_dir / "nevus" / "nev_000.jpg", test_dir / "nevus" / "old" / "nev_009.jpg")
    (test_dir / "README.txt").write_text("notes")
    (test_dir / "melanoma" / "empty.jpg").write_bytes(b"")
    result = evaluate(test_dir, "--model", trained_run, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 6
    stderr = result.stderr
    assert "ignored 1 folder(s) nested below a class folder" in stderr
    assert str(test_dir / "nevus" / "old") in stderr
    assert "ignored 1 file(s) outside any class folder" in stderr
    assert str(test_dir / "README.txt") in stderr
    assert "empty.jpg: empty file (0 bytes)" in stderr
