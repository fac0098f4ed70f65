"""`melanoma predict`: input expansion, streaming, and the CLI on the tiny trained model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, FakeClassifier, lesion_image
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.data.images import Unreadable, to_model_input
from melanoma_cli.inference.prediction import Prediction, expand_inputs, predict_files
from melanoma_cli.runtime.loading import load_classifier
from melanoma_cli.utils.errors import MelanomaError

runner = CliRunner()
READABLE = ["deep16.png", "gray.jpg", "large.jpg", "old.bmp", "rgba.png", "scan.tiff", "UPPER.JPG"]
RECORD_KEYS = {"path", "status", "reason", "prediction", "probability", "top_k", "probabilities",
               "melanoma_probability", "melanoma_flag"}
def picture_of(name: str) -> tuple[Image.Image, bool]:
    """What the readable file `name` of the `images` fixture shows (the model must classify that),
    and whether it is stored losslessly."""
    lesion = lesion_image("melanoma", 0, 64)
    return {"rgba.png": (lesion, True), "scan.tiff": (lesion, True), "old.bmp": (lesion, True),
            "deep16.png": (lesion.convert("L"), True), "gray.jpg": (lesion.convert("L"), False),
            "UPPER.JPG": (lesion, False),
            "large.jpg": (lesion_image("nevus", 1, 64).resize((1000, 800)), False)}[name]


def predict(*args) -> object:
    return runner.invoke(app, ["predict", *map(str, args)])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image in each format and mode predict must read, a fake JPEG, and a non-image."""
    root = tmp_path_factory.mktemp("predict") / "images"
    (root / "sub").mkdir(parents=True)
    lesion = lesion_image("melanoma", 0, 64)
    lesion.convert("RGBA").save(root / "rgba.png")
    Image.fromarray(np.asarray(lesion.convert("L"), np.uint16) * 257).save(root / "deep16.png")
    lesion.convert("L").save(root / "gray.jpg")
    lesion.save(root / "scan.tiff")
    lesion.save(root / "old.bmp")
    lesion.save(root / "sub" / "UPPER.JPG")
    lesion_image("nevus", 1, 64).resize((1000, 800)).save(root / "sub" / "large.jpg")
    (root / "broken.jpg").write_text("this is not a JPEG")
    (root / "notes.txt").write_text("not an image suffix: never tried")
    return root


def records_of(result, exit_code: int = 0) -> list[dict]:
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)


def test_expand_inputs_files_folders_globs(images):
    assert Image.open(images / "deep16.png").mode.startswith("I")  # really 16-bit
    found = expand_inputs([images / "sub", str(images / "*.png"), images / "rgba.png"])
    assert [p.name for p in found] == ["UPPER.JPG", "large.jpg", "deep16.png", "rgba.png"]
    everything = expand_inputs([images])
    assert sorted(p.name for p in everything) == sorted([*READABLE, "broken.jpg"])
    with pytest.raises(MelanomaError, match=r"input '.*absent\.jpg' does not exist"):
        expand_inputs([images / "absent.jpg"])
    with pytest.raises(MelanomaError, match="no files match"):
        expand_inputs([str(images / "*.gif")])


def test_predict_files_streams_batch_by_batch(images):
    readable = [path for path in expand_inputs([images]) if path.name != "broken.jpg"]
    paths = readable * 2 + [images / "broken.jpg"]
    model = FakeClassifier(list(CLASSES), favourite=0, melanoma_threshold=0.9)
    events = []
    stream = predict_files(model, paths, batch_size=4, top_k=2,
                           progress=lambda kind, values: events.append(kind))
    first = next(stream)
    assert model.batches == [4]  # only the first batch has been decoded and classified
    assert (first.path, first.top_k[0]) == (paths[0], ("melanoma", pytest.approx(0.7)))
    rest = list(stream)
    assert model.batches == [4, 4, 4, 2]
    assert [item.path for item in [first, *rest] if isinstance(item, Prediction)] == readable * 2
    assert [item.path.name for item in rest if isinstance(item, Unreadable)] == ["broken.jpg"]
    assert not any(item.melanoma_flag for item in [first, *rest] if isinstance(item, Prediction))
    assert events == ["start", "batch", "batch", "batch", "batch"]


def test_json_for_mixed_formats_and_modes(trained_run, images):
    result = predict(images, "--model", trained_run, "--json")
    records = records_of(result, exit_code=3)
    assert sorted(Path(r["path"]).name for r in records) == sorted([*READABLE, "broken.jpg"])
    broken = [r for r in records if r["status"] == "unreadable"]
    assert [Path(r["path"]).name for r in broken] == ["broken.jpg"] and broken[0]["reason"]
    assert set(broken[0]) == RECORD_KEYS and broken[0]["prediction"] is None
    records = [r for r in records if r["status"] == "classified"]
    info = json.loads((trained_run / "model.json").read_text())
    keras = load_classifier(trained_run, "keras")
    for record in records:
        assert set(record) == RECORD_KEYS
        picture, lossless = picture_of(Path(record["path"]).name)
        expected = keras.predict(to_model_input(picture, keras.image_size)[None])[0]
        assert list(record["probabilities"]) == keras.classes  # in the model's output order
        assert list(record["probabilities"].values()) == pytest.approx(
            expected.tolist(), abs=1e-5 if lossless else 0.03), record["path"]
        assert [name for name, _ in record["top_k"]] == sorted(
            CLASSES, key=lambda name: -record["probabilities"][name])
        assert record["top_k"][0] == [record["prediction"], record["probability"]]
        assert record["melanoma_probability"] == record["probabilities"]["melanoma"]
        assert record["melanoma_flag"] == (
            record["melanoma_probability"] >= info["melanoma_threshold"])
    assert "1 of 8 file(s) could not be read" in result.stderr and "broken.jpg" in result.stderr
    (gray,) = [line for line in result.stderr.splitlines() if "no colour" in line]
    assert gray.startswith("Warning: 2 image(s) have no colour (grayscale)")
    assert "deep16.png" in gray and "gray.jpg" in gray and "rgba.png" not in gray
    assert "notes.txt" not in result.stderr
    assert "model: " in result.stderr and "Decision aid only" in result.stderr


@pytest.mark.parametrize(("threshold", "flag"), [("0", True), ("1", False)])
def test_threshold_flags_everything_or_nothing(trained_run, images, threshold, flag):
    records = records_of(predict(images / "sub", "--model", trained_run, "--json",
                                 "--melanoma-threshold", threshold))
    assert len(records) == 2 and all(r["melanoma_flag"] is flag for r in records)


def test_table_and_csv(trained_run, images, tmp_path):
    target = tmp_path / "predictions.csv"
    result = predict(images / "rgba.png", images / "sub", "--model", trained_run, "--top-k", "2",
                     "--melanoma-threshold", "0", "--csv", target)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("MELANOMA FLAG") == 3
    assert "Decision aid only: not a diagnosis" in result.stdout
    assert "model: " in result.stdout
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["path"]).name for row in rows] == ["rgba.png", "UPPER.JPG", "large.jpg"]
    assert set(rows[0]) == {"path", "status", "reason", "prediction", "probability", "melanoma_probability",
                            "melanoma_flag", *CLASSES}
    assert all(row["melanoma_flag"] == "True" for row in rows)


def test_every_input_gets_a_row_and_the_exit_code_says_some_were_not_classified(
        trained_run, images, tmp_path):
    target = tmp_path / "triage.csv"
    inputs = [images / "gray.jpg", images / "broken.jpg", images / "rgba.png"]
    records = records_of(predict(*inputs, "--model", trained_run, "--json", "--csv", target), exit_code=3)
    assert [(Path(r["path"]).name, r["status"]) for r in records] == [
        ("gray.jpg", "classified"), ("broken.jpg", "unreadable"), ("rgba.png", "classified")]
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(Path(row["path"]).name, row["status"]) for row in rows] == [
        (Path(r["path"]).name, r["status"]) for r in records]
    assert rows[1]["reason"] == records[1]["reason"] != "" and rows[1]["prediction"] == ""
    table = predict(*inputs, "--model", trained_run)
    assert table.exit_code == 3 and table.stdout.count("unreadable") == 1


def test_top_k_larger_than_the_class_count(trained_run, images):
    records = records_of(predict(images / "gray.jpg", "--model", trained_run, "--json", "-k", "9"))
    assert len(records[0]["top_k"]) == len(CLASSES)


def test_errors_and_exit_codes(trained_run, images, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        ((images / "absent.jpg", "--model", trained_run), "input '", "does not exist"),
        ((str(images / "*.gif"), "--model", trained_run), "no files match", ""),
        ((tmp_path / "empty", "--model", trained_run), "no image files found", ""),
        ((images / "gray.jpg", "--model", trained_run, "--csv", tmp_path / "no" / "x.csv"),
         "cannot be written", ""),
        ((images / "broken.jpg", "--model", trained_run, "--json"), "none of the 1 file(s)", ""),
    ]
    for args, message, more in cases:
        result = predict(*args)
        assert result.exit_code == 1, (args, result.output)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: ") and message in last and more in last
        assert result.stdout.strip() == "" or "--json" not in args
    assert predict(images, "--model", trained_run, "--top-k", "0").exit_code == 2


def test_csv_has_unix_line_endings(trained_run, images, tmp_path):
    target = tmp_path / "predictions.csv"
    result = predict(images / "rgba.png", images / "gray.jpg", "--model", trained_run, "--csv", target)
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert b"\r\n" not in data and data.count(b"\n") == 3
