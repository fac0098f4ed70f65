"""What the commands print: help defaults, option ranges, and tables that fit 80 columns."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from melanoma_cli.cli import app, common
from melanoma_cli.runtime.default_model import DEFAULT_MODEL_DIR, EXAMPLES_DIR
from melanoma_cli.utils.class_names import abbreviations

runner = CliRunner()


@pytest.fixture
def columns_80(monkeypatch):
    """An 80-column terminal (the shared consoles read COLUMNS when they are created)."""
    monkeypatch.setenv("COLUMNS", "80")
    for console in (common.out, common.err):
        monkeypatch.setattr(console, "_width", 80)  # restored to None: later tests size by COLUMNS


def test_train_help_shows_its_defaults():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "final.yaml) (default: baseline.yaml)." in result.output
    assert "Run folder to create (default: runs/<config name>)." in result.output


def test_info_help_shows_its_default():
    result = runner.invoke(app, ["info", "--help"], env={"COLUMNS": "200"})
    assert "Run folder or .keras file (default: the bundled model)." in result.output


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_threshold_above_one_is_a_usage_error(command, tmp_path):
    result = runner.invoke(app, [command, str(tmp_path), "--melanoma-threshold", "5"])
    assert result.exit_code == 2
    assert "--melanoma-threshold" in result.output


def test_abbreviations_are_the_isic_ones_and_unique_for_others():
    assert abbreviations(["actinic keratosis", "melanoma", "vascular lesion"]) == {
        "actinic keratosis": "AK", "melanoma": "MEL", "vascular lesion": "VASC"}
    assert abbreviations(["blue naevus", "basal naevus", "MELANOMA", "other"]) == {
        "blue naevus": "BN", "basal naevus": "BN2", "MELANOMA": "MEL", "other": "OTHE"}


def test_evaluate_matrix_fits_80_columns_with_a_legend(tmp_path, columns_80):
    for image in EXAMPLES_DIR.glob("*.jpg"):
        folder = tmp_path / image.name.split("__")[0].replace("_", " ")
        folder.mkdir()
        shutil.copy(image, folder)
    result = runner.invoke(app, ["evaluate", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    legend = result.output[result.output.index("AK = "):]
    for name in sorted(p.name for p in tmp_path.iterdir()):
        assert f"= {name}" in legend


def test_info_wraps_long_paths_instead_of_cutting_them(tmp_path, columns_80):
    run = tmp_path / "a_rather_long_folder_name_for_a_model_0123456789" / "run"
    run.mkdir(parents=True)
    info = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    data_dir = str(tmp_path / "another_long_folder_name_abcdefghijklmnopqrstuvwxyz" / "Train")
    info["training"]["sources"][0]["path"] = data_dir
    (run / "model.json").write_text(json.dumps(info))
    (run / "model.keras").write_bytes(b"")
    result = runner.invoke(app, ["info", "--model", str(run)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    unboxed = "".join(ch for ch in result.output if ch not in "│ \n")
    assert data_dir in unboxed and str(run / "model.keras") in unboxed
