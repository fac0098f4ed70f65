"""The leakage guard: content found in a holdout folder never reaches training or validation."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, make_dataset
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.data.preparation import prepare_data

pytestmark = pytest.mark.slow  # every test here trains, serves or spawns processes


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plant_holdouts(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Training data plus two holdout folders holding copies of 4 training files (5 copies)."""
    data = make_dataset(tmp_path / "data", per_class=8)
    shutil.copy(data / "nevus" / "nev_000.jpg", data / "nevus" / "nev_000_copy.jpg")
    test, extra = tmp_path / "test", tmp_path / "extra"
    for folder, files in ((test, ["melanoma/mel_000.jpg", "nevus/nev_000.jpg",
                                  "vascular lesion/vas_000.jpg"]),
                          (extra, ["melanoma/mel_001.jpg"])):
        for name in files:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / name, target)
    return data, test, extra


def test_train_drops_holdout_content_and_records_it(tmp_path):
    data, test, extra = _plant_holdouts(tmp_path)
    run_dir = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run_dir), "--holdout", str(test),
            "--set", f"data.holdout_dirs=[{json.dumps(str(extra))}]"]
    for override in TINY_OVERRIDES:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    recorded = json.loads((run_dir / "metrics.json").read_text())["data"]
    assert recorded["dropped"]["holdout_overlap"] == 5  # both copies of nev_000 count
    kept = sum(recorded["train"].values()) + sum(recorded["validation"].values())
    assert kept == 25 - 5


def test_no_training_or_validation_file_matches_a_holdout_file(tmp_path):
    data, test, extra = _plant_holdouts(tmp_path)
    split = prepare_data(load_config(None, TINY_OVERRIDES), [SourceConfig(str(data))], [test, extra]).split
    held = {_digest(p) for folder in (test, extra) for p in folder.rglob("*.jpg")}
    used = {_digest(f.path) for f in [*split.train, *split.validation]}
    assert len(held) == 4
    assert not used & held
    assert len(split.train) + len(split.validation) == 20
