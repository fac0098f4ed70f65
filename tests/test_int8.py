"""Full-integer int8 export: calibration sample, equivalence report and rule, engine choice, info."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.data.images import decode_many
from melanoma_cli.inference.calibration import calibration_sample
from melanoma_cli.inference.equivalence import compare_on, judge
from melanoma_cli.runtime.loading import load_classifier
from melanoma_cli.runtime.run_folder import ModelInfo, RunFolder
from tests.conftest import CLASSES, make_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def int8_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of the tiny run with float and int8 exports and an equivalence report on a test set."""
    root = tmp_path_factory.mktemp("int8")
    run, test = root / "run", make_dataset(root / "test", per_class=4)
    shutil.copytree(trained_run, run)
    assert runner.invoke(app, ["export", "--model", str(run)]).exit_code == 0
    result = runner.invoke(app, ["export", "--model", str(run), "--quantize", "int8",
                                 "--calibration-per-class", "4", "--report-on", str(test), "--json"])
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_int8_export_is_its_own_file_calibrated_on_the_training_sources(int8_run):
    run, result = int8_run
    files = RunFolder(run)
    info = ModelInfo.load(files.info)
    assert info.exports["tflite"] == "model.tflite" and info.exports["tflite_int8"] == "model_int8.tflite"
    assert files.export("tflite", "int8").is_file() and files.export("tflite").is_file()
    sample = info.quantization["tflite_int8"]["calibration"]
    assert sample["from"] == "training.sources" and sample["per_class"] == 4
    assert sample["class_counts"] == dict.fromkeys(CLASSES, 4) and sample["images"] == 12
    assert result["max_abs_diff"] < 0.5


def test_equivalence_report_has_every_figure_with_n(int8_run):
    run, result = int8_run
    report = json.loads(RunFolder(run).int8_report.read_text())
    assert report == json.loads(json.dumps(result["report"]))
    assert isinstance(report["passes"], bool) and len(report["reasons"]) == 4
    (item,) = report["sets"]
    files = sorted(Path(item["test_set"]).rglob("*.jpg"))
    reference, candidate = load_classifier(run, "litert"), load_classifier(run, "litert-int8")
    images = decode_many(files, reference.image_size)[0]
    expected, got = reference.predict(images), candidate.predict(images)
    assert item["n"] == len(files) == 12
    assert item["top1_agreement"] == pytest.approx((expected.argmax(1) == got.argmax(1)).mean())
    assert item["max_abs_diff"] == pytest.approx(np.abs(expected - got).max(), abs=1e-6)
    assert item["mean_abs_diff"] == pytest.approx(np.abs(expected - got).mean(), abs=1e-6)
    assert item["melanoma_flag_agreement"] is not None
    for side in ("float", "int8"):
        for key in ("balanced_accuracy", "melanoma_auc", "melanoma_sensitivity",
                    "melanoma_specificity", "melanoma_n"):
            assert item[side][key] is not None, (side, key)
    assert item["float"]["melanoma_n"] == 4


# one image per row, with its true class and each model's probabilities (melanoma, nevus, vascular)
ROWS = [
    ("melanoma", [0.60, 0.30, 0.10], [0.55, 0.35, 0.10]),
    ("melanoma", [0.52, 0.40, 0.08], [0.45, 0.47, 0.08]),  # top-1 and flag change
    ("nevus", [0.20, 0.70, 0.10], [0.20, 0.70, 0.10]),
    ("nevus", [0.48, 0.42, 0.10], [0.51, 0.39, 0.10]),  # the flag changes (threshold 0.5)
    ("vascular lesion", [0.10, 0.10, 0.80], [0.10, 0.15, 0.75]),
    ("vascular lesion", [0.10, 0.20, 0.70], [0.10, 0.20, 0.70]),
]


@dataclass
class TableClassifier:
    """Returns row k's probabilities (float or int8 column) for an image whose red value is 40 * k."""

    column: int
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    image_size: int = 8
    melanoma_class: str | None = "melanoma"
    melanoma_threshold: float | None = 0.5
    melanoma_threshold_tta: float | None = None
    source: Path = Path("table.tflite")
    engine: str = "litert"

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.array([ROWS[k][self.column] for k in np.rint(images[:, 0, 0, 0] / 40).astype(int)])


def test_comparison_figures_checked_by_hand(tmp_path):
    for k, (label, _, _) in enumerate(ROWS):
        (tmp_path / label).mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(tmp_path / label / f"{k}.png")
    item = compare_on(TableClassifier(1), TableClassifier(2), tmp_path)
    assert item["n"] == 6 and item["melanoma_threshold"] == 0.5
    assert item["top1_agreement"] == pytest.approx(5 / 6)
    assert item["melanoma_flag_agreement"] == pytest.approx(4 / 6)
    assert item["max_abs_diff"] == pytest.approx(0.07)
    assert item["mean_abs_diff"] == pytest.approx((0.10 + 0.14 + 0.06 + 0.10) / 18)
    assert (item["float"]["accuracy"], item["int8"]["accuracy"]) == pytest.approx((5 / 6, 4 / 6))
    assert item["float"]["melanoma_sensitivity"] == 1.0 and item["int8"]["melanoma_sensitivity"] == 0.5
    assert item["float"]["melanoma_specificity"] == 1.0 and item["int8"]["melanoma_specificity"] == 0.75
    passes, reasons = judge([item])
    assert not passes and "FAILS: " + tmp_path.name + ": top-1 agreement 83.3% (needs >= 98%, n=6)" in reasons


def _set(top1=0.99, flags=0.99, ba=(0.70, 0.705), auc=(0.90, 0.895)) -> dict:
    return {"test_set": "/x/outside", "n": 500, "top1_agreement": top1, "melanoma_flag_agreement": flags,
            "float": {"balanced_accuracy": ba[0], "melanoma_auc": auc[0]},
            "int8": {"balanced_accuracy": ba[1], "melanoma_auc": auc[1]}}


@pytest.mark.parametrize(("sets", "passes", "failing"), [
    ([_set(), _set()], True, None),
    ([_set(), _set(top1=0.97)], False, "top-1 agreement 97.0%"),
    ([_set(flags=0.979)], False, "melanoma-flag agreement"),
    ([_set(ba=(0.70, 0.689))], False, "balanced accuracy 0.700 -> 0.689"),
    ([_set(auc=(0.90, 0.915))], False, "melanoma AUC 0.900 -> 0.915"),
    ([], False, "no test set"),
])
def test_the_shipping_rule(sets, passes, failing):
    verdict, reasons = judge(sets)
    assert verdict is passes
    bad = [r for r in reasons if not r.startswith("ok")]
    assert (failing is None and not bad) or any(failing in r for r in bad), reasons


def test_auto_runs_int8_only_when_its_report_passes_for_that_file(int8_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(int8_run[0], run)
    report_file = RunFolder(run).int8_report
    report = json.loads(report_file.read_text())
    for passes, digest, engine in [(True, report["int8_sha256"], "litert-int8"),
                                   (False, report["int8_sha256"], "litert"),
                                   (True, "0" * 64, "litert")]:
        report_file.write_text(json.dumps({**report, "passes": passes, "int8_sha256": digest}))
        assert load_classifier(run, "auto").engine == engine, (passes, digest)
    assert load_classifier(run, "litert").engine == "litert"
    assert load_classifier(run, "litert-int8").engine == "litert-int8"
    report_file.unlink()
    assert load_classifier(run, "auto").engine == "litert"


def test_predict_and_info_name_the_int8_engine_and_report(int8_run, tmp_path):
    run, _ = int8_run
    images = make_dataset(tmp_path / "images", per_class=1)
    result = runner.invoke(app, ["predict", str(images), "--model", str(run), "--engine", "litert-int8"])
    assert result.exit_code == 0, result.output
    assert "engine: litert-int8" in result.output
    shown = runner.invoke(app, ["info", "--model", str(run)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "int8 export" in shown.output and "int8 vs float: test" in shown.output
    summary = json.loads(runner.invoke(app, ["info", "--model", str(run), "--json"]).stdout)
    assert summary["int8"]["report"]["sets"][0]["n"] == 12


def test_int8_engine_without_export_is_a_one_line_error(trained_run, tmp_path):
    result = runner.invoke(app, ["predict", str(make_dataset(tmp_path / "i", per_class=1)),
                                 "--model", str(trained_run), "--engine", "litert-int8"])
    assert result.exit_code == 1 and "--quantize int8" in result.output


def test_calibration_sample_takes_each_class_from_every_source_in_turn(tmp_path):
    first = make_dataset(tmp_path / "a", per_class=5)
    second = make_dataset(tmp_path / "b", per_class=5)
    info = ModelInfo(classes=list(CLASSES), image_size=16,
                     training={"sources": [{"path": str(first)}, {"path": str(second), "name": "b2"}]})
    sample = calibration_sample(info, per_class=4)
    assert sample.images.shape == (12, 16, 16, 3)
    assert [s["images"] for s in sample.description["sources"]] == [6, 6]
    again = calibration_sample(info, per_class=4)
    assert (again.images == sample.images).all()
    override = calibration_sample(info, [str(second)], per_class=2).description
    assert override["from"] == "--calibration" and override["images"] == 6
