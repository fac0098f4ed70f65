"""`melanoma env`: what a bug report needs, from the running environment itself."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata

import numpy
import pytest
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.runtime.environment import warnings

runner = CliRunner()


def _distribution_version(module: str) -> str:
    """The version of the installed distribution that provides top-level `module`."""
    (name, *_) = metadata.packages_distributions()[module]
    return metadata.version(name)


@pytest.mark.slow
def test_env_json_reports_versions_devices_litert_and_platform():
    # GPUs hidden: whatever the machine, TensorFlow then sees exactly its one CPU device
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}
    result = subprocess.run([sys.executable, "-m", "melanoma_cli", "env", "--json"], env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(result.stdout)
    versions = summary["versions"]
    assert versions["tensorflow"] == _distribution_version("tensorflow")
    assert versions["keras"] == _distribution_version("keras")
    assert versions["numpy"] == numpy.__version__
    assert versions["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert set(versions) == {"melanoma-cli", "tensorflow", "keras", "numpy", "python", "ai-edge-litert"}
    assert [(d["type"], d["name"]) for d in summary["devices"]] == [("CPU", "/physical_device:CPU:0")]
    has_litert = importlib.util.find_spec("ai_edge_litert") is not None
    assert summary["litert_available"] is has_litert
    assert (versions["ai-edge-litert"] is not None) is has_litert
    assert summary["platform"]["machine"] == os.uname().machine
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    assert summary["platform"]["cpus"] >= usable
    assert summary["tensorflow_distributions"] == {
        name: metadata.version(name) for name in metadata.packages_distributions()["tensorflow"]}


def test_env_table_names_each_field():
    result = runner.invoke(app, ["env"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for field in ("melanoma-cli", "tensorflow", "keras", "numpy", "python", "ai-edge-litert", "CPU",
                  "LiteRT", "platform"):
        assert field in result.stdout


def test_two_tensorflow_packages_side_by_side_are_flagged():
    summary = {"tensorflow_distributions": {"tensorflow": "2.21.0", "tensorflow-cpu": "2.21.0"}}
    (message,) = warnings(summary)
    assert message.startswith("tensorflow and tensorflow-cpu are both installed")
    assert warnings({"tensorflow_distributions": {"tensorflow": "2.21.0"}}) == []
