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
from melanoma_cli.engine.export import check_batch, export_model
from melanoma_cli.runtime import loading as classifier_module
from melanoma_cli.runtime.default_model import EXAMPLES_DIR
from melanoma_cli.runtime.loading import choose_engine, load_classifier
from melanoma_cli.runtime.run_folder import ModelInfo, RunFolder
from melanoma_cli.utils.errors import MelanomaError

runner = CliRunner()
HEAVY = ("tensorflow", "keras", "sklearn", "scipy", "matplotlib", "Augmentor")
TF = ("tensorflow", "keras")


def heavy_modules_after(script: str) -> dict:
    """Run `script` in a fresh interpreter; the heavy modules it left in sys.modules, by label.

    The script calls `check(label)` (all of HEAVY) or `check(label, TF)` after each step.
    """
    prelude = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from melanoma_cli.cli import app\n"
        "runner, seen = CliRunner(), {}\n"
        f"HEAVY, TF = {HEAVY!r}, {TF!r}\n"
        "def check(label, modules=HEAVY): seen[label] = [m for m in modules if m in sys.modules]\n"
        "def invoke(*args):\n"
        "    result = runner.invoke(app, [str(a) for a in args])\n"
        "    assert result.exit_code == 0, result.output\n"
    )
    epilogue = "\nprint(json.dumps(seen))\n"
    done = subprocess.run([sys.executable, "-c", prelude + script + epilogue], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def exported_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny trained run with its LiteRT export."""
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(trained_run, run)
    export_model(run)
    return run


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("lesions") / "images", per_class=3, size=40)


def test_cli_help_inspect_and_rebalance_never_import_tensorflow(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    seen = heavy_modules_after(
        "check('import melanoma_cli.cli')\n"
        "for command in ([], ['predict'], ['evaluate'], ['train'], ['export'], ['inspect-dataset']):\n"
        "    invoke(*command, '--help')\n"
        "check('--help')\n"
        f"invoke('inspect-dataset', {str(data)!r}, '--json')\n"
        "check('inspect-dataset', TF)\n"  # imagehash brings scipy: fine, it is not TensorFlow
        f"invoke('rebalance', {str(data)!r}, '--out', {str(tmp_path / 'grown')!r}, '--target', '3')\n"
        "check('rebalance', TF)\n"
    )
    assert seen == {"import melanoma_cli.cli": [], "--help": [], "inspect-dataset": [], "rebalance": []}


def test_litert_predict_never_imports_tensorflow(exported_run, lesions):
    seen = heavy_modules_after(
        f"invoke('predict', {str(lesions)!r}, '--model', {str(exported_run)!r}, '--json')\n"
        "check('predict')\n"
    )
    assert seen == {"predict": []}


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
