"""The run folder: what a trained model is on disk, and how it is loaded back.

Every file name of a run folder (and of an evaluation report folder) is defined here, in
`RunFolder` and `ReportFolder`; everything else asks them for paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from melanoma_cli import __version__
from melanoma_cli.config import SourceConfig
from melanoma_cli.runtime.names import QUANTIZE_MODES
from melanoma_cli.utils.atomic import write_text, write_with
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.tensorflow import import_keras, import_tensorflow

METRICS_FILE = "metrics.json"  # a run's validation metrics, or an evaluation report


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder: `train` writes them, `predict`, `evaluate`, `info` read them."""

    path: Path

    @property
    def model(self) -> Path:
        """The best model so far, without optimizer state."""
        return self.path / "model.keras"

    @property
    def info(self) -> Path:
        """model.json: classes, image size, threshold, training record, exports."""
        return self.path / "model.json"

    @property
    def config(self) -> Path:
        """The full config the run was trained with."""
        return self.path / "config.yaml"

    @property
    def split(self) -> Path:
        """Which file went to which side of the train/validation split."""
        return self.path / "split.csv"

    @property
    def history(self) -> Path:
        """One row per completed epoch (epoch 1 is the first)."""
        return self.path / "history.csv"

    @property
    def last(self) -> Path:
        """The model after the last completed epoch, with its optimizer state (for resuming)."""
        return self.path / "last.keras"

    @property
    def state(self) -> Path:
        """Epochs done, best value and epoch, training time (for resuming)."""
        return self.path / "state.json"

    @property
    def metrics(self) -> Path:
        """The validation report of the best model (the split that chose it and its threshold)."""
        return self.path / METRICS_FILE

    @property
    def linear_probe(self) -> Path:
        """The logistic-regression head on frozen features (`model.linear_probe`), fitted before
        the first epoch."""
        return self.path / "linear_probe.npz"

    @property
    def seen_images(self) -> Path:
        """Fingerprints of every image the model was trained, validated or adapted on (no pixels)."""
        return self.path / "seen_images.npz"

    @property
    def curves(self) -> Path:
        """Loss and accuracy per epoch."""
        return self.path / "curves.png"

    def export(self, fmt: str, quantize: str | None = None) -> Path:
        """Where an export goes: model.tflite (what predict runs), model_<quantize>.tflite, saved_model/."""
        if fmt == "savedmodel":
            return self.path / "saved_model"
        return self.path / ("model.tflite" if quantize is None else f"model_{quantize}.tflite")

    @property
    def int8_report(self) -> Path:
        """The int8 export's equivalence report against the float export (written by export)."""
        return self.path / "int8_report.json"

    def remove_exports(self) -> None:
        """Delete the exports, the int8 report and their records in model.json: they were made
        from a model.keras that is about to be replaced."""
        for path in (self.export("tflite"), *(self.export("tflite", q) for q in QUANTIZE_MODES),
                     self.int8_report):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.export("savedmodel"), ignore_errors=True)
        if not self.info.is_file():
            return
        info = ModelInfo.load(self.info)
        if info.exports or info.quantization or info.export_sha256:
            info.exports, info.quantization, info.export_sha256 = {}, {}, {}
            info.save(self.path)

    def looks_like_run(self) -> bool:
        """Whether the folder holds a model.json or a model (so --overwrite may replace it)."""
        return self.info.exists() or self.model.exists()


@dataclass(frozen=True)
class ReportFolder:
    """The files `melanoma evaluate --report-dir` writes."""

    path: Path

    @property
    def metrics(self) -> Path:
        """The full evaluation report."""
        return self.path / METRICS_FILE

    @property
    def predictions(self) -> Path:
        """One row per evaluated image."""
        return self.path / "predictions.csv"

    @property
    def confusion_matrix(self) -> Path:
        """Counts and row-normalised rates."""
        return self.path / "confusion_matrix.png"


@dataclass
class ModelInfo:
    """model.json: everything needed to use a model besides its weights."""

    classes: list[str]
    image_size: int
    preprocessing: str = "raw RGB 0-255, resized to image_size x image_size (bilinear)"
    melanoma_class: str | None = "melanoma"
    melanoma_threshold: float | None = None
    melanoma_threshold_tta: float | None = None  # the same target, on probabilities averaged by --tta
    config_hash: str = ""
    status: str = "complete"
    best_epoch: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    exports: dict[str, str] = field(default_factory=dict)  # format -> file name in the model folder
    quantization: dict[str, Any] = field(default_factory=dict)  # export key -> method, calibration sample
    # results on test sets from outside the training sources: {name, n, melanomas, role, metrics}
    outside_sets: list[dict[str, Any]] = field(default_factory=list)
    export_sha256: dict[str, str] = field(default_factory=dict)  # export key -> SHA-256 of the .tflite

    def save(self, folder: Path) -> None:
        """Write model.json atomically."""
        write_text(RunFolder(folder).info, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelInfo:
        """Read and validate a model.json."""
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise MelanomaError(f"model info '{path}' is missing (expected beside the model)") from exc
        except (OSError, ValueError) as exc:
            raise MelanomaError(f"model info '{path}' is not valid JSON: {exc}") from exc
        known = set(cls.__dataclass_fields__)
        if not isinstance(values, dict) or not {"classes", "image_size"} <= set(values):
            raise MelanomaError(f"model info '{path}' lacks 'classes' or 'image_size'")
        info = cls(**{k: v for k, v in values.items() if k in known})
        if not isinstance(info.classes, list) or not all(isinstance(c, str) for c in info.classes):
            raise MelanomaError(f"model info '{path}': 'classes' must be a list of names")
        if not isinstance(info.image_size, int) or info.image_size < 1:
            raise MelanomaError(f"model info '{path}': 'image_size' must be a positive integer")
        for key in ("melanoma_threshold", "melanoma_threshold_tta"):
            threshold = getattr(info, key)
            if threshold is not None and (isinstance(threshold, bool)
                                          or not isinstance(threshold, int | float)):
                raise MelanomaError(f"model info '{path}': '{key}' must be a number or null, "
                                    f"not {threshold!r}")
        if info.melanoma_class is not None and not isinstance(info.melanoma_class, str):
            raise MelanomaError(f"model info '{path}': 'melanoma_class' must be a class name or null")
        if not isinstance(info.quantization, dict):
            raise MelanomaError(f"model info '{path}': 'quantization' must map exports to their records")
        if not isinstance(info.exports, dict) or not all(isinstance(v, str) for v in info.exports.values()):
            raise MelanomaError(f"model info '{path}': 'exports' must map formats to file names")
        _check_outside_sets(path, info.outside_sets)
        if not isinstance(info.export_sha256, dict):
            raise MelanomaError(f"model info '{path}': 'export_sha256' must map exports to their SHA-256")
        return info


OUTSIDE_SET_ROLES = ("development", "report")  # chose something about the model, or only reports


def _check_outside_sets(path: Path, sets: Any) -> None:
    """model.json 'outside_sets': a list of {name, n, melanomas, role, metrics}."""
    if not isinstance(sets, list):
        raise MelanomaError(f"model info '{path}': 'outside_sets' must be a list of test sets")
    for number, item in enumerate(sets, 1):
        if not isinstance(item, dict) or not {"name", "n", "role", "metrics"} <= set(item):
            raise MelanomaError(f"model info '{path}': outside set {number} needs 'name', 'n', 'role' "
                                "and 'metrics'")
        if item["role"] not in OUTSIDE_SET_ROLES:
            raise MelanomaError(f"model info '{path}': outside set '{item['name']}' has role "
                                f"{item['role']!r}, not one of {', '.join(OUTSIDE_SET_ROLES)}")


def file_digest(path: Path) -> str:
    """The SHA-256 of a file: ties model.json and the int8 equivalence report to the exact export."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def runtime_versions() -> dict[str, str]:
    """Versions that a saved model depends on."""
    keras, tf = import_keras(), import_tensorflow()

    return {
        "melanoma_cli": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


def check_run_folder(out: Path, overwrite: bool, hint: str = "use --overwrite to replace it") -> None:
    """Refuse an output that cannot become a run folder, without touching anything.

    `hint` ends the "already exists" refusal (say how else the folder can be used).
    """
    if not out.exists():
        parent = next(p for p in out.absolute().parents if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise MelanomaError(f"output folder '{out}' cannot be written "
                                f"('{parent}' is not a writable folder)")
        return
    if not out.is_dir():
        raise MelanomaError(f"output '{out}' exists and is not a folder")
    if any(out.iterdir()):
        if not overwrite:
            raise MelanomaError(f"run folder '{out}' already exists ({hint})")
        if not RunFolder(out).looks_like_run():
            raise MelanomaError(
                f"refusing to overwrite '{out}': it is not empty and does not look like a run folder"
            )


def prepare_run_folder(out: Path, overwrite: bool) -> None:
    """Create an empty run folder; refuse to clobber an existing one unless asked."""
    check_run_folder(out, overwrite)
    if out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise MelanomaError(f"output folder '{out}' cannot be written: {exc.strerror}") from exc


def resolve_model_path(model: Path) -> tuple[Path, Path]:
    """(model file, model.json) from a run folder or a .keras file with model.json beside it."""
    if model.is_dir():
        model_file = RunFolder(model).model
    elif model.suffix == ".keras" or model.suffix == ".tflite":
        model_file = model
    elif not model.exists():
        raise MelanomaError(f"model '{model}' does not exist")
    else:
        raise MelanomaError(f"model '{model}' is neither a run folder nor a .keras file")
    if not model_file.is_file():
        raise MelanomaError(f"model file '{model_file}' does not exist")
    return model_file, RunFolder(model_file.parent).info


@dataclass
class LoadedModel:
    """A Keras model with the facts from its model.json."""

    model: Any
    info: ModelInfo
    path: Path


def save_model(network: Any, target: Path) -> None:
    """Write `network` to the .keras file `target` atomically, its entries deflated (Keras stores
    them uncompressed; float weights shrink by about a tenth and load the same).

    Replacing a run folder's model.keras first removes the folder's exports, made from the old one.
    """
    run = RunFolder(target.parent)
    if target == run.model:
        run.remove_exports()

    def write(tmp: Path) -> None:
        network.save(tmp)
        with zipfile.ZipFile(tmp) as archive:
            entries = [(info, archive.read(info)) for info in archive.infolist()]
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)

    write_with(target, write)


def load_model(model: Path | str) -> LoadedModel:
    """Load a run folder or .keras file; check that model.json agrees with the network."""
    from melanoma_cli.models.saving import load_network

    model_file, info_file = resolve_model_path(Path(model))
    info = ModelInfo.load(info_file)
    network = load_network(model_file)
    outputs = network.outputs[0].shape[-1]
    if outputs != len(info.classes):
        raise MelanomaError(
            f"model info '{info_file}' lists {len(info.classes)} classes but the model has {outputs} outputs"
        )
    expected = tuple(network.inputs[0].shape[1:3])
    if expected != (info.image_size, info.image_size):
        raise MelanomaError(
            f"model info '{info_file}' says image_size {info.image_size} but the model takes {expected}"
        )
    return LoadedModel(network, info, model_file)


def recorded_sources(info: ModelInfo, info_file: Path | str = "model.json") -> list[SourceConfig]:
    """The training sources model.json records (`training.sources`, or a 0.1 run's `data_dir`);
    a one-line error naming the file if the record is damaged."""
    training = info.training if isinstance(info.training, dict) else {}
    sources = training.get("sources")
    if sources is None and isinstance(training.get("data_dir"), str):
        sources = [{"path": training["data_dir"]}]
    if sources is None:
        return []
    try:
        return [SourceConfig.model_validate({k: v for k, v in item.items() if k in SourceConfig.model_fields})
                for item in sources]
    except (ValidationError, AttributeError, TypeError) as exc:
        raise MelanomaError(f"model info '{info_file}': 'training.sources' is damaged") from exc
