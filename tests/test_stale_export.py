"""Exports belong to one model.keras: a write of model.keras removes them, and a .tflite that
model.json does not record by its SHA-256 is refused."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import lesion_image
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.runtime.default_model import DEFAULT_MODEL_DIR, EXAMPLES_DIR

runner = CliRunner()


def predict(*args: object):
    return runner.invoke(app, ["predict", *map(str, args)])


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_resume_removes_exports_and_a_stale_tflite_is_refused(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    image = tmp_path / "lesion.jpg"
    lesion_image("melanoma", 3, 32).save(image)
    recorded = json.loads((run / "model.json").read_text())
    assert set(recorded["export_sha256"]) == {"tflite"}
    assert predict(image, "--model", run / "model.tflite").exit_code == 0
    old_export = tmp_path / "old.tflite"
    shutil.copy(run / "model.tflite", old_export)

    state = json.loads((run / "state.json").read_text())  # as if stopped after epoch 2 of 3
    (run / "state.json").write_text(json.dumps({**state, "epochs_done": 2}))
    resumed = runner.invoke(app, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert not (run / "model.tflite").exists()
    info = json.loads((run / "model.json").read_text())
    assert (info["exports"], info["export_sha256"], info["status"]) == ({}, {}, "complete")

    shutil.copy(old_export, run / "model.tflite")  # an export of the model before the resume
    refused = predict(image, "--model", run / "model.tflite")
    assert refused.exit_code == 1
    assert last_line(refused).startswith(f"Error: '{run / 'model.tflite'}' is not an export recorded in")
    assert predict(image, "--model", run, "--engine", "litert").exit_code == 1
    assert predict(image, "--model", run, "--json").exit_code == 0  # auto: Keras, the current model

    exported = runner.invoke(app, ["export", "--model", str(run)])
    assert exported.exit_code == 0, exported.output
    assert predict(image, "--model", run / "model.tflite").exit_code == 0
    shutil.copy(DEFAULT_MODEL_DIR / "model.tflite", run / "model.tflite")  # replaced behind its back
    assert "is not an export recorded in" in last_line(predict(image, "--model", run / "model.tflite"))


def test_bundled_export_is_recorded_and_runs():
    info = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    assert set(info["export_sha256"]) == {"tflite"}
    result = runner.invoke(app, ["predict", "--examples", "--engine", "litert", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == len(list(EXAMPLES_DIR.glob("*.jpg")))
