"""Loading a model for prediction: a run folder or file, and the engine that runs it.

Two engines implement `Classifier`: Keras (model.keras, needs TensorFlow) and LiteRT (the
model's .tflite exports, no TensorFlow: float32, or full-integer int8 as its own engine name);
`load_classifier` picks one. Int8 is chosen by `auto` only when its equivalence report passes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from melanoma_cli.runtime.classifier import Classifier
from melanoma_cli.runtime.default_model import default_model_dir
from melanoma_cli.runtime.keras_engine import load_keras
from melanoma_cli.runtime.litert_engine import INSTALL_HINT, interpreter_class, load_litert
from melanoma_cli.runtime.names import INT8_ENGINE, INT8_QUANTIZE, Engine, EngineName
from melanoma_cli.runtime.run_folder import ModelInfo, RunFolder, file_digest, resolve_model_path
from melanoma_cli.runtime.tta import with_tta
from melanoma_cli.utils.errors import MelanomaError


def tflite_file(model_file: Path, info: ModelInfo, key: str = "tflite") -> Path | None:
    """The model's LiteRT flatbuffer: the file itself if given, else its recorded export if present.

    `key` names the export in model.json: tflite (float32) or tflite_int8.
    """
    if model_file.suffix == ".tflite":
        return model_file if key == "tflite" else None
    name = info.exports.get(key)
    path = model_file.parent / name if name else None
    return path if path is not None and path.is_file() else None


def int8_report(model_file: Path) -> dict | None:
    """The int8 equivalence report beside a model, or None when there is none (or it is unreadable)."""
    path = RunFolder(model_file.parent).int8_report
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def int8_approved(model_file: Path, int8: Path | None) -> bool:
    """Whether the int8 export may stand in for the float one: its report passes, for this file."""
    if int8 is None:
        return False
    report = int8_report(model_file)
    return bool(report and report.get("passes") is True
                and report.get("int8_sha256") == file_digest(int8))


def recorded_export(path: Path, info: ModelInfo) -> bool:
    """Whether `path` is an export model.json records by its SHA-256: made from this model, after
    the last write of its model.keras (which removes the records)."""
    return file_digest(path) in info.export_sha256.values()


def stale_export_error(path: Path, info_file: Path) -> MelanomaError:
    """The refusal to run a .tflite that model.json does not record."""
    return MelanomaError(f"'{path}' is not an export recorded in '{info_file}' (the model was "
                         "retrained or the file replaced since it was exported): export it again "
                         f"with 'melanoma export --model {path.parent}'")


def choose_engine(requested: Engine, tflite: Path | None, litert_installed: bool,
                  int8: Path | None = None, int8_passes: bool = False) -> EngineName:
    """The engine for `--engine`: auto prefers int8 LiteRT when its equivalence report passes,
    then float LiteRT when there is an export to run, then Keras."""
    if requested in ("litert", INT8_ENGINE):
        path = tflite if requested == "litert" else int8
        if path is None:
            how = "--format tflite" if requested == "litert" else f"--quantize {INT8_QUANTIZE}"
            raise MelanomaError(f"this model has no {requested} export: create one with 'melanoma export "
                                f"--model RUN {how}', or use --engine keras")
        if not litert_installed:
            raise MelanomaError(f"the LiteRT engine needs the ai-edge-litert package ({INSTALL_HINT}), "
                                "or use --engine keras")
        return requested
    if requested == "auto" and litert_installed:
        if int8 is not None and int8_passes:
            return INT8_ENGINE
        if tflite is not None:
            return "litert"
    return "keras"


def load_classifier(model: Path | None, engine: Engine = "auto",
                    note: Callable[[str], None] | None = None, tta: bool = False) -> Classifier:
    """Load `--model` (a run folder, or a .keras or .tflite file with model.json beside it).

    Without one, the bundled default model in melanoma_cli/default_model/ is used if installed.
    `engine` auto runs the int8 LiteRT export when its equivalence report passes, else the float
    LiteRT export when there is one, when ai-edge-litert is installed; else Keras. `note` hears
    why an existing export was not used. `tta` averages every prediction over the 8 flips and
    rotations of the image (see runtime/tta.py).
    """
    if model is None:
        model = default_model_dir()
    model_file, info_file = resolve_model_path(Path(model))
    info = ModelInfo.load(info_file)
    tflite = tflite_file(model_file, info)
    int8 = tflite_file(model_file, info, f"tflite_{INT8_QUANTIZE}")
    if model_file.suffix == ".tflite":
        if engine == "keras":
            raise MelanomaError(f"the Keras engine needs a .keras model, not '{model_file}'")
        engine = "litert"
    if engine in ("litert", INT8_ENGINE):
        named = tflite if engine == "litert" else int8
        if named is not None and not recorded_export(named, info):
            raise stale_export_error(named, info_file)
    elif engine == "auto":
        unrecorded = [path for path in (tflite, int8) if path is not None and not recorded_export(path, info)]
        if unrecorded and note is not None:
            note(f"not running {', '.join(repr(str(p)) for p in unrecorded)}: not recorded in "
                 f"'{info_file}' (made before the model was retrained?); export it again")
        tflite, int8 = (None if path in unrecorded else path for path in (tflite, int8))
    wants_litert = engine != "keras" and (tflite is not None or int8 is not None)
    interpreter = interpreter_class() if wants_litert else None
    passes = engine == "auto" and int8_approved(model_file, int8)
    chosen = choose_engine(engine, tflite, interpreter is not None, int8, passes)
    if chosen == INT8_ENGINE:
        return with_tta(load_litert(int8, info, interpreter, INT8_ENGINE), tta)
    if chosen == "litert":
        return with_tta(load_litert(tflite, info, interpreter), tta)
    if (tflite or int8) is not None and engine == "auto" and note is not None:
        note(f"ai-edge-litert is not installed: using Keras, which starts slower ({INSTALL_HINT})")
    return with_tta(load_keras(model_file), tta)
