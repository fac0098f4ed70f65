"""Test-time augmentation: the mean over the 8 flips and rotations, on both engines and the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import TrainConfig
from melanoma_cli.data.images import decode_many
from melanoma_cli.runtime.loading import load_classifier
from melanoma_cli.runtime.run_folder import ModelInfo
from melanoma_cli.runtime.tta import VIEW_COUNT, TTAClassifier, unview, uses_tta, view
from melanoma_cli.stats.metrics import threshold_for_sensitivity

runner = CliRunner()


def hand_made_views(images: np.ndarray) -> list[np.ndarray]:
    """D4 written another way: the four quarter turns, and the same of the upside-down images."""
    upside_down = images[:, ::-1]
    return [np.rot90(batch, k, axes=(1, 2)) for batch in (images, upside_down) for k in range(4)]


def test_views_are_the_eight_symmetries_and_unview_undoes_them():
    square = np.arange(2 * 5 * 5 * 3).reshape(2, 5, 5, 3)
    views = [view(square, index) for index in range(VIEW_COUNT)]
    assert np.array_equal(views[0], square)
    as_bytes = {v.tobytes() for v in views}
    assert as_bytes == {v.tobytes() for v in hand_made_views(square)} and len(as_bytes) == VIEW_COUNT
    for index, turned in enumerate(views):
        assert np.array_equal(unview(turned, index), square)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Random images and lopsided lesions: the views of each differ, so TTA changes the output."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    lopsided = noise.copy()
    lopsided[:, :8, :12] = (60, 30, 20)  # a dark patch in one corner
    return np.concatenate([noise, lopsided])


@pytest.mark.parametrize("engine", ["keras", "litert"])
def test_tta_is_the_mean_over_the_eight_views(exported_run, images, engine):
    plain = load_classifier(exported_run, engine)
    tta = load_classifier(exported_run, engine, tta=True)
    assert plain.engine == tta.engine == engine and uses_tta(tta) and not uses_tta(plain)
    expected = np.mean([plain.predict(np.ascontiguousarray(v)) for v in hand_made_views(images)], axis=0)
    averaged = tta.predict(images)
    np.testing.assert_allclose(averaged, expected, atol=1e-6)
    assert not np.allclose(averaged, plain.predict(images), atol=1e-4)  # the views do differ
    assert tta.predict(images[:0]).shape == (0, len(plain.classes))
    assert (tta.classes, tta.image_size) == (plain.classes, plain.image_size)
    info = ModelInfo.load(exported_run / "model.json")
    assert plain.melanoma_threshold == info.melanoma_threshold
    assert tta.melanoma_threshold == info.melanoma_threshold_tta != info.melanoma_threshold


def test_predict_and_evaluate_take_tta(exported_run, tmp_path):
    folder = make_dataset(tmp_path / "test", per_class=2)
    files = sorted(folder.rglob("*.jpg"))
    result = runner.invoke(app, ["predict", str(folder), "--model", str(exported_run), "--tta", "--json"])
    assert result.exit_code == 0, result.output
    assert "test-time augmentation: 8 views" in result.stderr
    rows = {row["path"]: row["probabilities"] for row in json.loads(result.stdout)}
    classifier = TTAClassifier(load_classifier(exported_run, "litert"))
    expected = classifier.predict(decode_many(files, classifier.image_size)[0])
    for file, probabilities in zip(files, expected, strict=True):
        assert list(rows[str(file)].values()) == pytest.approx(probabilities.tolist(), abs=1e-6)
    for flag, used in (["--tta"], True), ([], False):
        evaluation = runner.invoke(app, ["evaluate", str(folder), "--model", str(exported_run),
                                         "--engine", "keras", "--json", *flag])
        assert evaluation.exit_code == 0, evaluation.output
        assert json.loads(evaluation.stdout)["tta"] is used


def test_the_bundled_model_flags_with_its_own_tta_threshold():
    plain = load_classifier(None, "litert")
    tta = load_classifier(None, "litert", tta=True)
    assert plain.melanoma_threshold == pytest.approx(0.1098, abs=1e-4)
    assert tta.melanoma_threshold == pytest.approx(0.1591, abs=1e-4)  # set on its validation split

@pytest.mark.slow
def test_training_sets_the_tta_threshold_on_validation(trained_run):
    """The stored TTA threshold reaches the target sensitivity on the validation side of
    split.csv with the 8-view averaged probabilities, as the plain one does without TTA."""
    with (trained_run / "split.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["side"] == "validation"]
    plain = load_classifier(trained_run, "keras")
    images = decode_many([Path(row["path"]) for row in rows], plain.image_size)[0]
    is_melanoma = np.array([row["label"] == "melanoma" for row in rows])
    melanoma = plain.classes.index("melanoma")
    target = TrainConfig().melanoma_sensitivity
    averaged = TTAClassifier(plain).predict(images)[:, melanoma].astype(np.float64)
    single = plain.predict(images)[:, melanoma].astype(np.float64)
    info = ModelInfo.load(trained_run / "model.json")
    assert is_melanoma.any() and info.melanoma_threshold_tta is not None
    assert info.melanoma_threshold_tta == pytest.approx(
        threshold_for_sensitivity(is_melanoma, averaged, target), rel=1e-4)
    assert (averaged >= info.melanoma_threshold_tta)[is_melanoma].mean() >= target
    assert (single >= info.melanoma_threshold)[is_melanoma].mean() >= target
    metrics = json.loads((trained_run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["melanoma_threshold_tta"] == info.melanoma_threshold_tta


@pytest.mark.slow
def test_tta_flags_at_the_tta_threshold(exported_run, tmp_path):
    folder = make_dataset(tmp_path / "test", per_class=2)
    info = ModelInfo.load(exported_run / "model.json")
    result = runner.invoke(app, ["predict", str(folder), "--model", str(exported_run), "--tta", "--json"])
    assert result.exit_code == 0, result.output
    assert f"p >= {info.melanoma_threshold_tta:.3g}" in result.stderr
    for row in json.loads(result.stdout):
        assert row["melanoma_flag"] == (row["probabilities"]["melanoma"] >= info.melanoma_threshold_tta)
    evaluation = runner.invoke(app, ["evaluate", str(folder), "--model", str(exported_run), "--tta",
                                     "--json"])
    assert evaluation.exit_code == 0, evaluation.output
    assert json.loads(evaluation.stdout)["melanoma"]["threshold"] == info.melanoma_threshold_tta


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "evaluate", "explain"])
def test_tta_is_refused_for_a_model_without_a_tta_threshold(exported_run, tmp_path, command):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    values = json.loads((run / "model.json").read_text(encoding="utf-8"))
    del values["melanoma_threshold_tta"]  # a model trained before TTA thresholds were stored
    (run / "model.json").write_text(json.dumps(values), encoding="utf-8")
    folder = make_dataset(tmp_path / "test", per_class=1)
    extra = ["--out", str(tmp_path / "maps")] if command == "explain" else []
    result = runner.invoke(app, [command, str(folder), "--model", str(run), "--tta", *extra])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: --tta needs a melanoma threshold set with test-time augmentation")
    assert str(run) in result.output and "Traceback" not in result.output
    plain = runner.invoke(app, [command, str(folder), "--model", str(run), *extra])
    assert plain.exit_code == 0, plain.output
