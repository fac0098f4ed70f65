"""`melanoma adapt`: a trained ensemble fitted to a clinic from a small labelled sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, lesion_image, make_dataset
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.cli import app

runner = CliRunner()
pytestmark = pytest.mark.slow
LITE0 = ["model.backbone=efficientnet_lite0", "model.weights=imagenet", "model.dense_units=0",
         "data.image_size=32", "data.batch_size=8", "train.epochs=1", "model.linear_probe=true",
         "model.linear_probe_features=stages"]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adapt")
    data = make_dataset(root / "archive", per_class=6, size=32)
    args = ["train", "--data", str(data), "--out", str(root / "run")]
    for override in LITE0:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "run"


def _clinic(root: Path, per_class: int = 8, melanomas: int | None = None) -> Path:
    """Another clinic's images: other lesions under a warmer light, never seen in training."""
    for label in CLASSES:
        (root / label).mkdir(parents=True)
        count = melanomas if label == "melanoma" and melanomas is not None else per_class
        for index in range(count):
            image = np.asarray(lesion_image(label, 1000 + index, size=32), np.float32)
            tinted = np.clip(image * [1.15, 0.95, 0.8] + [20, 5, 0], 0, 255).astype(np.uint8)
            Image.fromarray(tinted).save(root / label / f"clinic_{index:03d}.jpg")
    return root


def test_adapt_writes_a_run_that_predicts_with_a_threshold_set_on_the_sample(ensemble_run, tmp_path):
    sample = _clinic(tmp_path / "clinic")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ensemble_run.iterdir())
    result = runner.invoke(app, ["adapt", str(sample), "--model", str(ensemble_run), "--out",
                                 str(tmp_path / "adapted"), "--sensitivity", "0.8", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["sample"] == str(sample.absolute()) and record["images"] == 24
    assert record["classes"] == {"melanoma": 8, "nevus": 8, "vascular lesion": 8}
    assert record["target_sensitivity"] == 0.8 and record["sensitivity"]["value"] >= 0.8
    assert record["sensitivity"]["n"] == 8 and record["specificity"]["n"] == 16
    low, high = record["sensitivity"]["ci95"]
    assert low < record["sensitivity"]["value"] <= high  # 8 melanomas: a wide interval, stated
    info = json.loads((tmp_path / "adapted" / "model.json").read_text())
    base = info["training"]["adaptation"]["base_threshold"]
    assert info["melanoma_threshold"] == record["threshold"] != base
    assert info["training"]["adaptation"]["sample"] == str(sample.absolute())
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ensemble_run.iterdir()) == before  # base untouched

    images = sorted(sample.rglob("*.jpg"))
    predicted = runner.invoke(app, ["predict", *map(str, images), "--model", str(tmp_path / "adapted"),
                                    "--json"])
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.stdout)
    flags = [row["melanoma_flag"] for row in rows]
    assert flags == [row["probabilities"]["melanoma"] >= record["threshold"] for row in rows]
    shown = runner.invoke(app, ["info", "--model", str(tmp_path / "adapted"), "--json"])
    assert shown.exit_code == 0, shown.output
    card = json.loads(shown.stdout)
    assert card["training"]["adaptation"]["images"] == 24 and card["melanoma_threshold_tta"] is None
    assert card["outside_sets"] == []  # the base model's results are not the adapted model's
    table = runner.invoke(app, ["info", "--model", str(tmp_path / "adapted")])
    assert table.exit_code == 0 and "adapted to" in table.stdout
    tta = runner.invoke(app, ["predict", str(images[0]), "--model", str(tmp_path / "adapted"), "--tta"])
    assert tta.exit_code == 1 and "--tta" in tta.stderr

    again = runner.invoke(app, ["adapt", str(sample), "--model", str(tmp_path / "adapted"), "--out",
                                str(tmp_path / "twice")])
    assert again.exit_code == 1 and "the model was trained or validated on" in again.stderr  # now seen


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: _clinic(root, melanomas=3), "has 3 melanoma(s) and 16 other lesion(s): at least 5"),
    (lambda root: (make_dataset(root, per_class=6, size=32, classes=("melanoma", "freckle"))),
     "has label(s) not in"),
])
def test_adapt_refuses_a_sample_it_cannot_use(ensemble_run, tmp_path, make, message):
    sample = make(tmp_path / "clinic")
    result = runner.invoke(app, ["adapt", str(sample), "--model", str(ensemble_run), "--out",
                                 str(tmp_path / "adapted")])
    assert result.exit_code == 1, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and message in error[0] and "Traceback" not in result.output
    assert not (tmp_path / "adapted").exists()


def test_adapt_refuses_the_model_s_own_training_images(ensemble_run, tmp_path):
    training = Path(json.loads((ensemble_run / "model.json").read_text())["training"]["sources"][0]["path"])
    sample = tmp_path / "copy"
    shutil.copytree(training, sample)
    result = runner.invoke(app, ["adapt", str(sample), "--model", str(ensemble_run), "--out",
                                 str(tmp_path / "adapted")])
    assert result.exit_code == 1
    assert "holds 18 image(s) the model was trained or validated on" in result.stderr


def test_adapt_needs_a_model_with_a_linear_probe(trained_run, tmp_path):
    sample = _clinic(tmp_path / "clinic")
    result = runner.invoke(app, ["adapt", str(sample), "--model", str(trained_run), "--out",
                                 str(tmp_path / "adapted")])
    assert result.exit_code == 1 and "has no linear probe" in result.stderr
