"""Test-time augmentation: the mean over the 8 flips and rotations, on both engines and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.data.images import decode_many
from melanoma_cli.runtime.loading import load_classifier
from melanoma_cli.runtime.tta import VIEW_COUNT, TTAClassifier, unview, uses_tta, view

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
    assert (tta.classes, tta.image_size, tta.melanoma_threshold) == (
        plain.classes, plain.image_size, plain.melanoma_threshold)


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
