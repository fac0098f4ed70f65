"""`melanoma env`: what a bug report needs, from the running environment itself."""

from __future__ import annotations

import json
import platform
from importlib import metadata

from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.runtime.environment import warnings

runner = CliRunner()


def test_env_json_reports_versions_devices_litert_and_platform():
    from melanoma_cli.runtime.litert_engine import interpreter_class
    from melanoma_cli.utils.tensorflow import import_tensorflow

    result = runner.invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    tf = import_tensorflow()
    versions = summary["versions"]
    assert versions["tensorflow"] == tf.__version__
    assert versions["numpy"] == metadata.version("numpy")
    assert versions["python"] == platform.python_version()
    assert set(versions) == {"melanoma-cli", "tensorflow", "keras", "numpy", "python", "ai-edge-litert"}
    seen = {(d.device_type, d.name) for d in tf.config.list_physical_devices()}
    assert {(d["type"], d["name"]) for d in summary["devices"]} == seen
    assert any(device["type"] == "CPU" for device in summary["devices"])
    assert summary["litert_available"] is (interpreter_class() is not None)
    assert summary["platform"]["machine"] == platform.machine()
    assert len(summary["tensorflow_distributions"]) >= 1


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
