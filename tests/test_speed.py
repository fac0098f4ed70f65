"""Start-up speed and the LiteRT engine: lazy imports, export round trip, engine selection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.data.images import decode_many
from melanoma_cli.inference.export import check_batch
from melanoma_cli.runtime import loading as classifier_module
from melanoma_cli.runtime.default_model import EXAMPLES_DIR
from melanoma_cli.runtime.loading import choose_engine, load_classifier
from melanoma_cli.runtime.run_folder import ModelInfo, RunFolder
from melanoma_cli.utils.errors import MelanomaError

pytestmark = pytest.mark.slow  # every test here trains, serves or spawns processes

runner = CliRunner()
HEAVY = ("tensorflow", "keras", "sklearn", "scipy", "matplotlib", "Augmentor", "gradio")
TF = ("tensorflow", "keras")


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("lesions") / "images", per_class=3, size=40)


def _help(tmp: Path, request: pytest.FixtureRequest) -> list[list]:
    commands = ([], ["predict"], ["evaluate"], ["train"], ["export"], ["inspect-dataset"], ["rebalance"],
                ["info"], ["explain"], ["serve"])
    return [[*command, "--help"] for command in commands]


def _inspect(tmp: Path, request: pytest.FixtureRequest) -> list[list]:
    data, test = make_dataset(tmp / "data", per_class=2), make_dataset(tmp / "test", per_class=1)
    return [["inspect-dataset", data, "--test-dir", test, "--json"]]


def _rebalance(tmp: Path, request: pytest.FixtureRequest) -> list[list]:
    return [["rebalance", make_dataset(tmp / "data", per_class=2), "--out", tmp / "grown", "--target", "3"]]


def _predict_litert(tmp: Path, request: pytest.FixtureRequest) -> list[list]:
    run, images = request.getfixturevalue("exported_run"), request.getfixturevalue("lesions")
    return [["predict", images, "--model", run, "--json"]]


# command -> (the CLI calls to make, the modules that must still be unimported after them)
LIGHT_COMMANDS = {
    "help": (_help, HEAVY),
    "inspect-dataset": (_inspect, TF),  # imagehash brings scipy: fine, it is not TensorFlow
    "rebalance": (_rebalance, TF),
    "predict-litert": (_predict_litert, HEAVY),
}


@pytest.mark.parametrize("command", list(LIGHT_COMMANDS))
def test_command_never_imports_tensorflow(command, tmp_path, request):
    calls, modules = LIGHT_COMMANDS[command]
    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from melanoma_cli.cli import app\n"
        f"for args in {[[str(a) for a in call] for call in calls(tmp_path, request)]!r}:\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_export_round_trip_matches_keras(exported_run, lesions):
    info = ModelInfo.load(RunFolder(exported_run).info)
    assert info.exports == {"tflite": "model.tflite"}
    assert (exported_run / "model.tflite").stat().st_size > 0
    images = np.concatenate([check_batch(info.image_size),
                             np.zeros((1, info.image_size, info.image_size, 3), np.uint8)])
    keras_model = load_classifier(exported_run, "keras")
    litert_model = load_classifier(exported_run, "litert")
    assert (keras_model.engine, litert_model.engine) == ("keras", "litert")
    many = np.concatenate([images] * 5)  # more than one interpreter call (INVOKE_BATCH)
    for batch in (images, images[:1], many, images[:0]):  # the interpreter is resized as needed
        np.testing.assert_allclose(litert_model.predict(batch), keras_model.predict(batch), atol=1e-5)


def test_savedmodel_export_is_recorded_beside_the_tflite_one(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    result = runner.invoke(app, ["export", "--model", str(run), "--format", "savedmodel", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["max_abs_diff"] < 1e-5 and Path(summary["path"]) == run / "saved_model"
    assert (run / "saved_model" / "saved_model.pb").is_file()
    exports = ModelInfo.load(RunFolder(run).info).exports
    assert exports == {"tflite": "model.tflite", "savedmodel": "saved_model"}


def predictions(*args) -> tuple[list[dict], str]:
    result = runner.invoke(app, ["predict", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_predict_engines_agree_through_the_cli(exported_run, lesions):
    litert, litert_log = predictions(lesions, "--model", exported_run, "--engine", "litert")
    keras, keras_log = predictions(lesions, "--model", exported_run, "--engine", "keras",
                                   "--batch-size", "4")
    assert "engine: litert" in litert_log and "engine: keras" in keras_log
    assert [row["prediction"] for row in litert] == [row["prediction"] for row in keras]
    for fast, slow in zip(litert, keras, strict=True):
        assert fast["path"] == slow["path"]
        assert fast["probabilities"] == pytest.approx(slow["probabilities"], abs=1e-5)


def test_auto_picks_litert_only_when_an_export_exists(trained_run, exported_run):
    assert load_classifier(exported_run).engine == "litert"
    assert load_classifier(exported_run / "model.tflite").engine == "litert"
    assert load_classifier(trained_run).engine == "keras"


def test_auto_falls_back_to_keras_with_a_note_without_the_package(exported_run, monkeypatch):
    monkeypatch.setattr(classifier_module, "interpreter_class", lambda: None)
    notes: list[str] = []
    assert load_classifier(exported_run, note=notes.append).engine == "keras"
    assert len(notes) == 1 and "pip install ai-edge-litert" in notes[0]
    with pytest.raises(MelanomaError, match="pip install ai-edge-litert"):
        load_classifier(exported_run, "litert")


def test_choose_engine_rules():
    export = Path("run/model.tflite")
    assert choose_engine("auto", export, True) == "litert"
    assert choose_engine("auto", export, False) == "keras"
    assert choose_engine("auto", None, True) == "keras"
    assert choose_engine("keras", export, True) == "keras"
    assert choose_engine("litert", export, True) == "litert"
    with pytest.raises(MelanomaError, match="melanoma export"):
        choose_engine("litert", None, True)


def test_litert_without_an_export_is_a_one_line_error(trained_run, lesions):
    result = runner.invoke(app, ["predict", str(lesions), "--model", str(trained_run),
                                    "--engine", "litert"])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "melanoma export" in result.stderr
    evaluation = runner.invoke(app, ["evaluate", str(lesions), "--model", str(trained_run),
                                        "--engine", "litert"])
    assert evaluation.exit_code == 1 and "melanoma export" in evaluation.stderr


def test_model_json_without_exports_still_loads(trained_run, tmp_path):
    values = json.loads(RunFolder(trained_run).info.read_text())
    values.pop("exports", None)
    RunFolder(tmp_path).info.write_text(json.dumps(values))
    assert ModelInfo.load(RunFolder(tmp_path).info).exports == {}


def test_bundled_model_ships_an_up_to_date_litert_export():
    examples = sorted(EXAMPLES_DIR.glob("*.jpg"))
    result = runner.invoke(app, ["predict", str(examples[0])])  # no --model, no --engine
    assert result.exit_code == 0, result.output
    assert "engine: litert" in result.stdout
    litert_model = load_classifier(None)
    images = decode_many(examples, litert_model.image_size)[0]
    keras_model = load_classifier(None, "keras")  # a stale export would disagree with model.keras
    np.testing.assert_allclose(litert_model.predict(images), keras_model.predict(images), atol=1e-5)


def test_dynamic_export_leaves_the_float_export_that_predict_runs(exported_run, lesions, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    float_bytes = (run / "model.tflite").read_bytes()
    result = runner.invoke(app, ["export", "--model", str(run), "--quantize", "dynamic", "--json"])
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)["path"]) == run / "model_dynamic.tflite"
    assert (run / "model_dynamic.tflite").stat().st_size > 0
    assert (run / "model.tflite").read_bytes() == float_bytes
    assert ModelInfo.load(RunFolder(run).info).exports == {
        "tflite": "model.tflite", "tflite_dynamic": "model_dynamic.tflite"}
    litert, _ = predictions(lesions, "--model", run, "--engine", "litert")
    keras, _ = predictions(lesions, "--model", run, "--engine", "keras")
    for fast, slow in zip(litert, keras, strict=True):
        assert fast["probabilities"] == pytest.approx(slow["probabilities"], abs=1e-4)
