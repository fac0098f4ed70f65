"""Loading a model for prediction: a run folder or file, and the engine that runs it.

Two engines implement `Classifier`: Keras (model.keras, needs TensorFlow) and LiteRT (the
model's .tflite export, no TensorFlow); `load_classifier` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from melanoma_cli.runtime.classifier import Classifier
from melanoma_cli.runtime.default_model import default_model_dir
from melanoma_cli.runtime.keras_engine import load_keras
from melanoma_cli.runtime.litert_engine import INSTALL_HINT, interpreter_class, load_litert
from melanoma_cli.runtime.names import Engine, EngineName
from melanoma_cli.runtime.run_folder import ModelInfo, resolve_model_path
from melanoma_cli.runtime.tta import with_tta
from melanoma_cli.utils.errors import MelanomaError


def tflite_file(model_file: Path, info: ModelInfo) -> Path | None:
    """The model's LiteRT flatbuffer: the file itself if given, else its recorded export if present."""
    if model_file.suffix == ".tflite":
        return model_file
    name = info.exports.get("tflite")
    path = model_file.parent / name if name else None
    return path if path is not None and path.is_file() else None


def choose_engine(requested: Engine, tflite: Path | None, litert_installed: bool) -> EngineName:
    """'keras' or 'litert' for `--engine`: auto prefers LiteRT when there is an export to run."""
    if requested == "litert":
        if tflite is None:
            raise MelanomaError("this model has no LiteRT export: create one with 'melanoma export "
                                "--model RUN --format tflite', or use --engine keras")
        if not litert_installed:
            raise MelanomaError(f"the LiteRT engine needs the ai-edge-litert package ({INSTALL_HINT}), "
                                "or use --engine keras")
        return "litert"
    if requested == "auto" and tflite is not None and litert_installed:
        return "litert"
    return "keras"


def load_classifier(model: Path | None, engine: Engine = "auto",
                    note: Callable[[str], None] | None = None, tta: bool = False) -> Classifier:
    """Load `--model` (a run folder, or a .keras or .tflite file with model.json beside it).

    Without one, the bundled default model in melanoma_cli/default_model/ is used if installed.
    `engine` auto runs the LiteRT export when there is one and ai-edge-litert is installed, else
    Keras; `note` hears why an existing export was not used. `tta` averages every prediction over
    the 8 flips and rotations of the image (see runtime/tta.py).
    """
    if model is None:
        model = default_model_dir()
    model_file, info_file = resolve_model_path(Path(model))
    info = ModelInfo.load(info_file)
    tflite = tflite_file(model_file, info)
    if model_file.suffix == ".tflite":
        if engine == "keras":
            raise MelanomaError(f"the Keras engine needs a .keras model, not '{model_file}'")
        engine = "litert"
    interpreter = interpreter_class() if tflite is not None and engine != "keras" else None
    if choose_engine(engine, tflite, interpreter is not None) == "litert":
        return with_tta(load_litert(tflite, info, interpreter), tta)
    if tflite is not None and engine == "auto" and note is not None:
        note(f"ai-edge-litert is not installed: using Keras, which starts slower ({INSTALL_HINT})")
    return with_tta(load_keras(model_file), tta)
