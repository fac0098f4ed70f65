"""`--help` at 80 columns: whole option names, option metavars that name what to give (not Python
types), usage lines without doubled brackets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMANDS = ["train", "export", "evaluate", "predict", "explain", "serve", "rebalance"]


def help_text(command: str) -> str:
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    result = subprocess.run([sys.executable, "-m", "melanoma_cli", command, "--help"], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns_without_python_types(command):
    text = help_text(command)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "[[" not in usage and "]...]" not in usage
    options = [line for line in text.splitlines() if line.lstrip("│ *").startswith("-")]
    assert options and not any("…" in line.split("  ")[0] for line in options), options
    python_types = ("<list[", "<str>", "<path>", "<int>", "<int range>", "<float range>", "|li ")
    assert not any(mark in line for line in options for mark in python_types), options


@pytest.mark.slow
def test_help_shows_choices_and_the_models_each_command_takes():
    assert "--calibration-per-class" in help_text("export")
    assert "auto|isic2018|none" in help_text("evaluate")
    assert ".tflite" not in help_text("explain") and ".tflite" in help_text("predict")
