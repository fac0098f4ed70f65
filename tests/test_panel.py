"""The panel: other clinics' sets choose the checkpoint and the melanoma threshold."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_OVERRIDES, lesion_image, make_dataset
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.cli import app

runner = CliRunner()
pytestmark = pytest.mark.slow


def _clinic_csv(root: Path, tint: tuple[float, float, float], first: int, per_class: int = 6) -> Path:
    """Another clinic as a labels CSV: other lesions under another light."""
    (root / "images").mkdir(parents=True)
    rows = []
    for label in ("melanoma", "nevus", "vascular lesion"):
        for index in range(first, first + per_class):
            image = np.asarray(lesion_image(label, index), np.float32) * tint
            name = f"{label[:3]}_{index}.jpg"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / name)
            rows.append((name, label, name))
    with (root / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("file", "label", "group"), *rows])
    return root


def test_the_panel_chooses_the_checkpoint_and_a_threshold_that_holds_on_every_member(tmp_path):
    data = make_dataset(tmp_path / "archive", per_class=10)
    warm = _clinic_csv(tmp_path / "warm", (1.2, 0.9, 0.75), 500)
    cold = _clinic_csv(tmp_path / "cold", (0.8, 0.95, 1.2), 700)
    shutil.copy(warm / "images" / "mel_500.jpg", data / "melanoma" / "copy_of_panel.jpg")  # held out
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--panel", f"warm={warm}",
            "--panel", f"cold={cold}", "--json"]
    for override in [*TINY_OVERRIDES, "train.epochs=3", "train.monitor=panel_melanoma_auc",
                     "train.melanoma_sensitivity=0.8"]:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["data"]["dropped"]["holdout_overlap"] == 1

    with (tmp_path / "run" / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    means = [float(row["panel_melanoma_auc"]) for row in history]
    for row in history:  # the monitored value is the mean of validation and every member
        parts = [float(row[k]) for k in ("val_melanoma_auc", "panel_warm_melanoma_auc",
                                         "panel_cold_melanoma_auc")]
        assert float(row["panel_melanoma_auc"]) == pytest.approx(np.mean(parts))
    assert summary["best_epoch"] == int(np.argmax(means)) + 1

    panel = summary["panel"]
    assert set(panel["members"]) == {"validation", "warm", "cold"}
    needed = [row["threshold_for_target"] for row in panel["members"].values()]
    assert summary["melanoma_threshold"] == pytest.approx(min(needed))
    for name, row in panel["members"].items():
        assert row["sensitivity"] >= 0.8, name  # the promise holds on every member
        assert row["n"] == (18 if name != "validation" else row["n"]) and row["melanoma_auc_ci"] is not None
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["melanoma_threshold"] == summary["melanoma_threshold"]


def test_a_panel_set_without_melanomas_is_one_line(tmp_path):
    data = make_dataset(tmp_path / "archive", per_class=6)
    clinic = make_dataset(tmp_path / "clinic", per_class=4, classes=("nevus",))
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--panel", str(clinic)]
    for override in [*TINY_OVERRIDES, "train.epochs=1"]:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "panel set 'clinic'" in result.stderr and "needs both 'melanoma' and other images" in result.stderr
