"""The bundled default model: it loads, agrees with its model.json, predicts the bundled samples,
and ships inside a non-editable install."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.data.images import decode_many
from melanoma_cli.runtime.default_model import DEFAULT_MODEL_DIR, MODEL_CARD
from melanoma_cli.runtime.loading import load_classifier

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "melanoma_cli" / "examples"
runner = CliRunner()


def test_bundled_model_json_agrees_with_the_network():
    from melanoma_cli.runtime.run_folder import load_model

    loaded = load_model(DEFAULT_MODEL_DIR)  # checks outputs == classes and input == image_size
    assert len(loaded.info.classes) == 9
    assert loaded.info.classes == sorted(loaded.info.classes)
    assert loaded.info.melanoma_class == "melanoma"
    validation = json.loads((DEFAULT_MODEL_DIR / "metrics.json").read_text())["validation"]["melanoma"]
    assert validation["threshold"] == loaded.info.melanoma_threshold  # set on the split it reports
    assert validation["sensitivity"] >= 0.85 and validation["tp"] + validation["fn"] == 281
    # two EfficientNet-Lite0 members (fine-tuned + linear probe), float32, no optimizer state, deflated
    assert (DEFAULT_MODEL_DIR / "model.keras").stat().st_size <= 25 * 2**20


def test_every_class_has_a_bundled_example():
    info = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    labels = {path.name.split("__")[0].replace("_", " ") for path in EXAMPLES.glob("*.jpg")}
    assert labels == set(info["classes"])


TRUSTED_SOURCES = {"ham10000", "isic2017"}  # data.trust_sources of final.yaml


def test_examples_match_their_recorded_sources():
    """sources.csv records, per example, the label a trusted source gives its ISIC id and the
    bytes that were checked against it: names, labels and files must all agree with it."""
    with (EXAMPLES / "sources.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["file"] for row in rows) == sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    assert sorted(row["label"] for row in rows) == sorted(
        json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["classes"])
    for row in rows:
        assert row["file"] == f"{row['label'].replace(' ', '_')}__{row['isic_id']}.jpg"
        assert row["label_source"] in TRUSTED_SOURCES
        assert hashlib.sha256((EXAMPLES / row["file"]).read_bytes()).hexdigest() == row["sha256"]
        assert (EXAMPLES / row["file"]).stat().st_size <= 30_000
    assert "ISIC_0011118" not in {row["isic_id"] for row in rows}  # melanoma in ISIC 2017


def test_predict_examples_uses_the_bundled_model():
    result = runner.invoke(app, ["predict", "--examples", "--json"])
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    assert len(predictions) == len(list(EXAMPLES.glob("*.jpg")))
    keras = load_classifier(None, "keras")  # the network the LiteRT export was made from
    files = [Path(row["path"]) for row in predictions]
    expected = keras.predict(decode_many(files, keras.image_size)[0])
    for row, probabilities in zip(predictions, expected, strict=True):
        assert list(row["probabilities"]) == keras.classes
        assert list(row["probabilities"].values()) == pytest.approx(probabilities.tolist(), abs=1e-4)
    correct = sum(Path(r["path"]).name.split("__")[0].replace("_", " ") == r["prediction"]
                  for r in predictions)
    assert correct >= len(predictions) // 2, predictions
    assert "bundled" in result.stderr
    from melanoma_cli.cli.predict_command import _shown_path
    from melanoma_cli.runtime.default_model import EXAMPLES_DIR

    assert _shown_path(EXAMPLES_DIR / "melanoma__ISIC_0000146.jpg") == "melanoma__ISIC_0000146.jpg"


def test_predict_without_model_uses_the_bundled_one():
    image = next(EXAMPLES.glob("melanoma__*.jpg"))
    result = runner.invoke(app, ["predict", str(image)])
    assert result.exit_code == 0, result.output
    assert "Decision aid only" in result.stdout


def test_info_shows_the_model_card_summary():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["bundled"] and summary["image_size"] > 0
    assert summary["validation"]["melanoma"]["sensitivity"] >= 0.85
    assert MODEL_CARD.is_file()


def test_wheel_contains_model_examples_configs_and_card(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True)
    (wheel,) = tmp_path.glob("melanoma_cli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"melanoma_cli/default_model/model.keras", "melanoma_cli/default_model/model.json",
                "melanoma_cli/MODEL_CARD.md", "melanoma_cli/configs/final.yaml",
                *(f"melanoma_cli/examples/{p.name}" for p in EXAMPLES.glob("*.jpg"))}
    assert expected <= names


def test_without_a_bundled_model_the_error_says_so(monkeypatch, tmp_path):
    from melanoma_cli.runtime import default_model

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    for args in (["predict", str(next(EXAMPLES.glob("*.jpg")))], ["evaluate", str(tmp_path)], ["info"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip() == "Error: no --model given and no bundled default model is installed"
