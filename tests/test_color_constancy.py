"""Shades-of-Gray colour constancy inside the model: what it computes, and that it travels."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_OVERRIDES, make_dataset
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import load_config
from melanoma_cli.models.build import build_model
from melanoma_cli.models.color_constancy import shades_of_gray
from melanoma_cli.runtime.run_folder import ModelInfo, load_model

runner = CliRunner()


def _reference(images: np.ndarray, power: float = 6.0) -> np.ndarray:
    x = np.maximum(images / 255.0, 1e-6)
    illuminant = np.mean(x**power, axis=(1, 2), keepdims=True) ** (1 / power)
    return np.clip(x * illuminant.mean(axis=-1, keepdims=True) / illuminant, 0, 1) * 255


def test_it_removes_a_colour_cast_as_the_formula_says():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    cast = images * np.array([1.0, 0.7, 0.5], np.float32)  # a warm lamp
    corrected = np.asarray(shades_of_gray()(cast))
    np.testing.assert_allclose(corrected, _reference(cast), atol=1e-3)
    means = corrected.mean(axis=(0, 1, 2))
    assert means.max() - means.min() < 0.05 * means.mean()  # channels balanced again
    raw = cast.mean(axis=(0, 1, 2))
    assert raw.max() - raw.min() > 0.3 * raw.mean()


def test_a_model_with_it_saves_and_loads_with_the_same_outputs(tmp_path):
    config = load_config(None, ["model.color_constancy=shades_of_gray", "model.filters=[4]",
                                "model.dense_units=0"])
    model = build_model(config.model, 3, 16)
    assert model.get_layer("shades_of_gray").power == 6.0
    model.save(tmp_path / "model.keras")
    ModelInfo(classes=["a", "b", "c"], image_size=16).save(tmp_path)
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3)).astype(np.float32)
    loaded = load_model(tmp_path)
    np.testing.assert_allclose(loaded.model.predict(images, verbose=0), model.predict(images, verbose=0),
                               atol=1e-6)


@pytest.mark.slow
def test_a_run_with_it_resumes_and_a_damaged_checkpoint_is_called_damaged(tmp_path):
    """The checkpoint holds the custom layer: resuming, in a process that has not built one yet,
    loads it through the package's one loader."""
    data = make_dataset(tmp_path / "data", per_class=6)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run)]
    for override in [*TINY_OVERRIDES, "train.epochs=2", "model.color_constancy=shades_of_gray"]:
        args += ["--set", override]
    assert runner.invoke(app, args).exit_code == 0
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "epochs_done": 1}))  # as if stopped after epoch 1
    resumed = subprocess.run([sys.executable, "-m", "melanoma_cli", "train", "--resume", str(run)],
                             capture_output=True, text=True)  # a fresh process: nothing registered yet
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (run / "state.json").write_text(json.dumps({**state, "epochs_done": 1}))
    (run / "last.keras").write_bytes(b"not a zip archive")
    damaged = runner.invoke(app, ["train", "--resume", str(run)])
    assert damaged.exit_code == 1 and "damaged or not a Keras model" in damaged.stderr
