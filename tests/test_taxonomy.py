"""Scoring a 9-class model on a test set with coarser classes (ISIC 2018's 7, or 'A or B')."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import lesion_image
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.inference.evaluation import evaluate_folder
from melanoma_cli.inference.taxonomy import resolve_taxonomy
from melanoma_cli.utils.errors import MelanomaError

MODEL_CLASSES = ["actinic keratosis", "melanoma", "nevus", "pigmented benign keratosis",
                 "seborrheic keratosis", "squamous cell carcinoma"]
AKIEC = "actinic keratosis or squamous cell carcinoma"
# one test image per row: (label, model probabilities in MODEL_CLASSES order)
CASES = [
    (AKIEC, [0.30, 0.35, 0.00, 0.00, 0.00, 0.35]),  # AK+SCC 0.65 beats melanoma
    ("pigmented benign keratosis", [0.00, 0.40, 0.00, 0.25, 0.35, 0.00]),  # PBK+SK 0.60 beats 0.40
    ("melanoma", [0.00, 0.60, 0.40, 0.00, 0.00, 0.00]),
    ("nevus", [0.00, 0.55, 0.45, 0.00, 0.00, 0.00]),  # wrong, and a false melanoma flag
]


@dataclass
class RowClassifier:
    """Returns CASES[k]'s probabilities for an image whose red value is 40 * k."""

    classes: list[str]
    image_size: int = 8
    melanoma_class: str | None = "melanoma"
    melanoma_threshold: float | None = 0.5
    source: Path = Path("rows.keras")
    engine: str = "keras"

    def predict(self, images: np.ndarray) -> np.ndarray:
        rows = np.rint(images[:, 0, 0, 0] / 40).astype(int)
        return np.array([CASES[k][1] for k in rows], dtype=np.float64)


def _csv_test_set(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    lines = ["file,label"]
    for k, (label, _) in enumerate(CASES):
        Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(root / "images" / f"t{k}.png")
        lines.append(f"t{k}.png,{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_merged_classes_sum_their_probabilities_checked_by_hand(tmp_path):
    result = evaluate_folder(RowClassifier(MODEL_CLASSES), _csv_test_set(tmp_path / "isic2018"),
                             resamples=50)
    report = result.report
    assert report["classes"] == [AKIEC, "melanoma", "nevus", "pigmented benign keratosis"]
    assert report["taxonomy"] == {"name": "isic2018", "merged": {
        AKIEC: ["actinic keratosis", "squamous cell carcinoma"],
        "pigmented benign keratosis": ["pigmented benign keratosis", "seborrheic keratosis"]}}
    np.testing.assert_allclose(result.probabilities[1], [0.0, 0.40, 0.0, 0.60])
    assert report["confusion_matrix"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["balanced_accuracy"] == pytest.approx(0.75)
    melanoma = report["melanoma"]
    assert (melanoma["tp"], melanoma["fn"], melanoma["fp"], melanoma["tn"]) == (1, 0, 1, 2)
    assert melanoma["specificity"] == pytest.approx(2 / 3)


def test_without_merging_the_same_set_is_refused(tmp_path):
    with pytest.raises(MelanomaError, match=f"the model does not know: '{AKIEC}'"):
        evaluate_folder(RowClassifier(MODEL_CLASSES), _csv_test_set(tmp_path / "t"), taxonomy="none")


def test_a_or_b_labels_merge_and_custom_merges_name_model_classes():
    merged = resolve_taxonomy(["melanoma", "nevus", "vascular lesion"], {"melanoma or nevus"}, "test")
    assert merged.classes == ["melanoma or nevus", "vascular lesion"] and merged.members == [[0, 1], [2]]
    custom = resolve_taxonomy(["a", "b", "c"], {"ab", "c"}, "test", custom={"ab": ["a", "b"]})
    assert custom.classes == ["ab", "c"]
    with pytest.raises(MelanomaError, match="'z' is not a model class"):
        resolve_taxonomy(["a", "b"], {"a"}, "test", custom={"az": ["a", "z"]})


def test_evaluate_reads_a_labels_csv_through_the_cli(tmp_path, trained_run):
    root = tmp_path / "csvtest"
    (root / "images").mkdir(parents=True)
    rows = ["file,label"]
    for k, label in enumerate(["melanoma", "nevus", "vascular lesion", "melanoma"]):
        lesion_image(label, 500 + k).save(root / "images" / f"c{k}.jpg")
        rows.append(f"c{k}.jpg,{'melanoma or nevus' if label != 'vascular lesion' else label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(app, ["evaluate", str(root), "--model", str(trained_run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 4 and report["classes"] == ["melanoma or nevus", "vascular lesion"]
    assert report["melanoma"] is None  # melanoma is merged away: no melanoma block to report
    assert sum(map(sum, report["confusion_matrix"])) == 4
