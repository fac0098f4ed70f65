"""The fit loop: staged training, checkpoints, resuming, and the run folder.

After every epoch the run folder holds what a resume needs, written atomically and together
(SIGINT and SIGTERM are held back until all four files are in place):

- `last.keras`: the model after the last completed epoch, with its optimizer state;
- `state.json`: epochs done, the best monitored value and its epoch, training time so far;
- `history.csv`: one row per completed epoch;
- `model.keras`: the best model so far, replaced only when the monitored value improves.

`resume` rebuilds the same split (same seed), restores `last.keras` and goes on with the stage
it was in. Within a stage the optimizer state carries over; at a stage boundary the optimizer
restarts, as in an uninterrupted run. Shuffling, augmentation and early-stopping patience
restart too, so a resumed run is close to, not bit-identical with, an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.config import Config, SourceConfig, StageConfig, load_config
from melanoma_cli.data.images import Unreadable
from melanoma_cli.data.preparation import PreparedData, prepare_data
from melanoma_cli.data.sources import source_name
from melanoma_cli.data.split import Split
from melanoma_cli.engine.metrics import summary, threshold_for_sensitivity
from melanoma_cli.runtime.run_folder import (
    INFO_FILE,
    MODEL_FILE,
    ModelInfo,
    check_run_folder,
    prepare_run_folder,
    runtime_versions,
)
from melanoma_cli.utils.atomic import write_text, write_with
from melanoma_cli.utils.errors import MelanomaError, first_line
from melanoma_cli.utils.progress import Progress as ProgressHook
from melanoma_cli.utils.tensorflow import import_keras, seed_everything

LAST_FILE = "last.keras"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.csv"


@dataclass
class TrainResult:
    """What `train` and `resume` hand back to the command line."""

    run_dir: Path
    best_epoch: int | None
    validation: dict
    interrupted: bool
    skipped: list[Unreadable]
    summary: dict


def lower_is_better(monitor: str) -> bool:
    """Whether the monitored metric improves downwards (a loss) rather than upwards."""
    return monitor.endswith("loss")


@dataclass
class TrainState:
    """state.json: where a run stands after its last completed epoch."""

    epochs_done: int = 0  # also the index of the next epoch (early stopping may skip some)
    best_value: float | None = None
    best_epoch: int | None = None
    train_seconds: float = 0.0

    def improves(self, value: float, monitor: str) -> bool:
        """Whether `value` of `monitor` beats the best so far (a NaN best is beaten by anything)."""
        if self.best_value is None or math.isnan(self.best_value):
            return True
        return value < self.best_value if lower_is_better(monitor) else value > self.best_value

    def save(self, out: Path) -> None:
        """Write state.json atomically."""
        write_text(out / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, out: Path) -> TrainState | None:
        """The saved state of a run folder, None if it has none."""
        path = out / STATE_FILE
        if not path.exists():
            return None
        try:
            state = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise MelanomaError(f"cannot resume: '{path}' is damaged ({exc})") from exc
        if not isinstance(state.epochs_done, int) or state.epochs_done < 0:
            raise MelanomaError(f"cannot resume: '{path}' has no valid 'epochs_done'")
        return state


@dataclass
class _Run:
    """One training session on a run folder (a new run, or a resumed one)."""

    config: Config
    out: Path
    data: PreparedData
    record: dict[str, Any]  # model.json "training": where the data came from
    state: TrainState
    report: ProgressHook


class _Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt, except while an epoch's files are written."""

    def __init__(self) -> None:
        self.holding = False
        self.pending = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.holding:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle both signals (a scheduler's SIGTERM stops training like Ctrl-C)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold interrupts back for the duration; one that arrived is raised at the end."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _validation_callback(keras, val_dataset, val_labels: np.ndarray):
    """One pass over validation per epoch: loss, accuracy and balanced accuracy."""

    class ValidationMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            from sklearn.metrics import balanced_accuracy_score

            probabilities = self.model.predict(val_dataset, verbose=0)
            predicted = probabilities.argmax(axis=1)
            picked = np.clip(probabilities[np.arange(len(val_labels)), val_labels], 1e-7, 1.0)
            logs["val_loss"] = float(-np.log(picked).mean())
            logs["val_accuracy"] = float((predicted == val_labels).mean())
            with warnings.catch_warnings():  # a class predicted but absent from validation is fine
                warnings.simplefilter("ignore", UserWarning)
                logs["val_balanced_accuracy"] = float(balanced_accuracy_score(val_labels, predicted))

    return ValidationMetrics()


def _history_csv(rows: list[dict[str, Any]]) -> str:
    """history.csv text: epoch (from 0), then the logged values in name order."""
    names = ["epoch", *sorted(name for name in rows[0] if name != "epoch")] if rows else ["epoch"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, names, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _recording_callbacks(keras, run: _Run, interrupts: _Interrupts, history: list[dict[str, Any]]):
    """The epoch's files (see the module docstring), then the caller's progress hook."""
    state, out, monitor = run.state, run.out, run.config.train.monitor
    started, seconds_before = time.perf_counter(), state.train_seconds

    class RunRecorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with interrupts.held():
                history.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
                write_with(out / LAST_FILE, self.model.save)
                value = float(logs[monitor])
                if state.improves(value, monitor):
                    state.best_value, state.best_epoch = value, epoch + 1
                    # The best model ships without optimizer state: a third of the size.
                    write_with(out / MODEL_FILE,
                               lambda tmp: self.model.save(tmp, include_optimizer=False))
                state.epochs_done = epoch + 1
                state.train_seconds = seconds_before + time.perf_counter() - started
                write_text(out / HISTORY_FILE, _history_csv(history))
                state.save(out)

    class Reporter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            run.report("batch", {"batch": batch + 1})

        def on_epoch_end(self, epoch, logs=None):
            run.report("epoch", {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})

    return RunRecorder(), Reporter()


def _stages(config: Config) -> list[StageConfig]:
    if config.train.stages:
        return config.train.stages
    return [StageConfig(config.train.epochs, config.train.learning_rate, "all")]


def _remaining_stages(config: Config, epochs_done: int) -> list[tuple[StageConfig, int, int, int]]:
    """(stage, its first epoch, the epoch to start at, its end) for the stages not yet finished."""
    remaining, start = [], 0
    for stage in _stages(config):
        end = start + stage.epochs
        if end > epochs_done:
            remaining.append((stage, start, max(start, epochs_done), end))
        start = end
    return remaining


def make_optimizer(keras, config: Config, learning_rate: float, steps: int):
    """Adam or AdamW at `learning_rate`, cosine-decayed over `steps` when the config says so."""
    rate: Any = learning_rate
    if config.train.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    if config.train.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.train.weight_decay)
    return keras.optimizers.Adam(rate)


def _compile_stage(keras, model, config: Config, stage: StageConfig, steps_per_epoch: int) -> None:
    """Make the stage's part of the model trainable and give it a fresh optimizer."""
    if config.model.backbone != "none":
        from melanoma_cli.models.backbones.registry import set_trainable

        set_trainable(model, config.model.backbone, stage.trainable)
    model.compile(
        optimizer=make_optimizer(keras, config, stage.learning_rate, stage.epochs * steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing),
        metrics=["accuracy"],
    )


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency loss weights ('balanced'); 1.0 for a class absent from `labels`."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = dict.fromkeys(range(num_classes), 1.0)
    result.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return result


def _stage_callbacks(keras, config: Config) -> list:
    """Early stopping and plateau schedule, fresh for each stage."""
    mode = "min" if lower_is_better(config.train.monitor) else "max"
    callbacks = []
    if config.train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            config.train.monitor, patience=config.train.early_stopping_patience, mode=mode))
    if config.train.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            config.train.monitor, factor=0.5, patience=2, mode=mode))
    return callbacks


def _split_rows(split: Split) -> list[tuple[str, str, str, str]]:
    """(path, label, sha256, side) of every file in the split."""
    return [(str(f.path), f.label, f.sha256, side)
            for side, files in (("train", split.train), ("validation", split.validation))
            for f in files]


def _split_csv(split: Split) -> str:
    """Which file went to which side, so a run's validation set can be rebuilt exactly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "sha256", "side"])
    writer.writerows(_split_rows(split))
    return buffer.getvalue()


def _write_report(out: Path, payload: dict, name: str) -> None:
    write_text(out / name, json.dumps(payload, indent=2) + "\n")


def _model_info(run: _Run, status: str, threshold: float | None, training: dict) -> ModelInfo:
    melanoma = run.config.train.melanoma_class
    return ModelInfo(
        classes=run.data.classes,
        image_size=run.config.data.image_size,
        melanoma_class=melanoma if melanoma in run.data.classes else None,
        melanoma_threshold=threshold,
        config_hash=run.config.fingerprint(),
        status=status,
        best_epoch=run.state.best_epoch,
        versions=runtime_versions(),
        training=training,
    )


def _initial_model(keras, run: _Run):
    """A new model, or for a resumed run the last one with its optimizer state."""
    from melanoma_cli.models.build import build_model  # also registers the model's own layers

    if run.state.epochs_done == 0:
        return build_model(run.config.model, len(run.data.classes), run.config.data.image_size)
    try:
        return keras.models.load_model(run.out / LAST_FILE)
    except Exception as exc:  # Keras raises many types for damaged archives
        raise MelanomaError(
            f"cannot resume: '{run.out / LAST_FILE}' cannot be loaded: {first_line(exc)}") from exc


def _fit(keras, run: _Run, model, train_dataset, val_dataset) -> bool:
    """Train the remaining stages; True when interrupted (Ctrl-C or SIGTERM)."""
    config, data = run.config, run.data
    steps = int(np.ceil(len(data.train_labels) / config.data.batch_size))
    run.report("start", {"epochs": sum(stage.epochs for stage in _stages(config)), "steps": steps,
                         "done": run.state.epochs_done, "train": len(data.train_labels),
                         "validation": len(data.val_labels)})
    class_weight = (balanced_class_weights(data.train_labels, len(data.classes))
                    if config.train.class_weights else None)
    interrupts = _Interrupts()
    history = read_history(run.out)[:run.state.epochs_done]
    recorder, reporter = _recording_callbacks(keras, run, interrupts, history)
    validation = _validation_callback(keras, val_dataset, data.val_labels)
    try:
        with interrupts.installed():
            for stage, stage_start, first, end in _remaining_stages(config, run.state.epochs_done):
                if first == stage_start:  # mid-stage, the resumed model keeps its optimizer
                    _compile_stage(keras, model, config, stage, steps)
                callbacks = [validation, *_stage_callbacks(keras, config), recorder, reporter]
                model.fit(train_dataset, epochs=end, initial_epoch=first, class_weight=class_weight,
                          callbacks=callbacks, shuffle=False, verbose=0)
    except KeyboardInterrupt:
        return True
    return False


def _finish(keras, run: _Run, val_dataset, interrupted: bool) -> TrainResult:
    """Validate the best model and write model.json, metrics.json and the curves."""
    from melanoma_cli.utils.plots import plot_training_curves

    config, data, state, out = run.config, run.data, run.state, run.out
    best = keras.models.load_model(out / MODEL_FILE, compile=False)
    probabilities = best.predict(val_dataset, verbose=0)
    validation = summary(data.val_labels, probabilities, data.classes)
    melanoma = config.train.melanoma_class
    threshold = None
    if melanoma in data.classes:
        index = data.classes.index(melanoma)
        threshold = threshold_for_sensitivity(
            data.val_labels == index, probabilities[:, index], config.train.melanoma_sensitivity
        )
    epochs_run = len(read_history(out))
    metrics = {
        "best_epoch": state.best_epoch,
        "monitor": config.train.monitor,
        "data": {**data.split.summary(), "generated": data.generated, "skipped": len(data.skipped)},
        "validation": validation,
        "melanoma_threshold": threshold,
    }
    seconds = max(state.train_seconds, 1e-9)
    training = {
        **run.record,
        "epochs_run": epochs_run,
        "interrupted": interrupted,
        "train_seconds": round(seconds, 1),
        "train_images_per_second": round(epochs_run * len(data.train_labels) / seconds, 1),
    }
    _model_info(run, "incomplete" if interrupted else "complete", threshold, training).save(out)
    _write_report(out, metrics, "metrics.json")
    plot_training_curves(out / HISTORY_FILE, out / "curves.png")
    run_summary = {"run_dir": str(out), **metrics, "training": training}
    return TrainResult(out, state.best_epoch, validation, interrupted, data.skipped, run_summary)


def _train_run(run: _Run) -> TrainResult:
    """Train `run` from its state to the end (or an interrupt), then write its result files."""
    from melanoma_cli.data.pipeline import build_augmenter, make_dataset

    keras = import_keras()
    config, data = run.config, run.data
    seed_everything(config.seed)
    num_classes, batch = len(data.classes), config.data.batch_size
    train_dataset = make_dataset(
        data.train_images, data.train_labels, num_classes, batch, shuffle=True,
        augmenter=build_augmenter(config.augment, config.seed), seed=config.seed,
    )
    val_dataset = make_dataset(data.val_images, None, num_classes, batch)
    model = _initial_model(keras, run)
    interrupted = _fit(keras, run, model, train_dataset, val_dataset)
    if run.state.best_epoch is None:
        raise MelanomaError(f"training stopped before the first epoch ended; no model saved in '{run.out}'")
    return _finish(keras, run, val_dataset, interrupted)


def _refuse_output_inside(out: Path, inputs: Sequence[Path]) -> None:
    """A run folder is never written into the data or a holdout folder."""
    target = Path(os.path.realpath(out))
    for folder in inputs:
        if target.is_relative_to(os.path.realpath(folder)):
            raise MelanomaError(f"refusing to write run folder '{out}' inside input folder '{folder}'")


def _source_record(config: Config, sources: Sequence[SourceConfig]) -> list[dict[str, Any]]:
    """Every source with an absolute path, as model.json records it (enough to resume)."""
    return [{**dataclasses.asdict(spec), "path": str(Path(spec.path).absolute()),
             "name": source_name(spec)} for spec in [*config.data.sources, *sources]]


def train(
    config: Config,
    sources: Sequence[SourceConfig],
    out: Path,
    *,
    overwrite: bool = False,
    holdout_dirs: Sequence[Path] = (),
    progress: ProgressHook | None = None,
) -> TrainResult:
    """Train a model on the config's and the given sources and write a run folder to `out`."""
    report = progress or (lambda kind, values: None)
    holdouts = [Path(p).absolute() for p in [*config.data.holdout_dirs, *holdout_dirs]]
    recorded = _source_record(config, sources)
    _refuse_output_inside(out, [Path(s["path"]) for s in recorded] + holdouts)
    check_run_folder(out, overwrite)  # before the slow part; nothing is replaced until data is ready
    report("status", {"message": "scanning and decoding " + ", ".join(s["path"] for s in recorded)})
    data = prepare_data(config, sources, holdouts)
    prepare_run_folder(out, overwrite)
    write_text(out / CONFIG_FILE, config.to_yaml())
    write_text(out / SPLIT_FILE, _split_csv(data.split))
    record = {"data_dir": recorded[0]["path"] if recorded else None, "sources": recorded,
              "holdout_dirs": [str(p) for p in holdouts]}
    run = _Run(config, out, data, record, TrainState(), report)
    _model_info(run, "incomplete", None, record).save(out)  # a crash leaves a resumable run
    return _train_run(run)


def _load_run(run_dir: Path) -> tuple[Config, ModelInfo, TrainState]:
    """The config, model.json and state of a run folder that can be resumed."""
    if not all((run_dir / name).is_file() for name in (INFO_FILE, CONFIG_FILE, SPLIT_FILE)):
        raise MelanomaError(f"cannot resume '{run_dir}': not a run folder "
                            f"(it needs {INFO_FILE}, {CONFIG_FILE} and {SPLIT_FILE})")
    try:
        config = load_config(run_dir / CONFIG_FILE)
    except MelanomaError as exc:
        raise MelanomaError(f"cannot resume '{run_dir}': {exc}") from exc
    info = ModelInfo.load(run_dir / INFO_FILE)
    state = TrainState.load(run_dir)
    if state is None:
        if (run_dir / MODEL_FILE).exists():
            raise MelanomaError(f"cannot resume '{run_dir}': it has a model but no {STATE_FILE} "
                                "(made by an older version?); train it again with --overwrite")
        state = TrainState()
    elif state.epochs_done > 0 and not (run_dir / LAST_FILE).is_file():
        raise MelanomaError(f"cannot resume '{run_dir}': '{LAST_FILE}' is missing")
    total = sum(stage.epochs for stage in _stages(config))
    if state.epochs_done >= total:
        raise MelanomaError(f"run '{run_dir}' has trained all {total} epochs; nothing to resume")
    return config, info, state


def _check_same_data(run_dir: Path, info: ModelInfo, data: PreparedData) -> None:
    """A resumed run must see the data it was trained on: same classes, same split by content."""
    if data.classes != info.classes:
        raise MelanomaError(f"cannot resume '{run_dir}': the classes in the data "
                            f"({', '.join(data.classes)}) are not the run's ({', '.join(info.classes)})")
    try:
        with (run_dir / SPLIT_FILE).open(newline="", encoding="utf-8") as handle:
            recorded = Counter((r["label"], r["sha256"], r["side"]) for r in csv.DictReader(handle))
    except (OSError, KeyError, csv.Error) as exc:
        raise MelanomaError(f"cannot resume: '{run_dir / SPLIT_FILE}' is damaged ({exc})") from exc
    current = Counter(row[1:] for row in _split_rows(data.split))
    if current != recorded:
        differ = sum(((recorded - current) + (current - recorded)).values())
        raise MelanomaError(f"cannot resume '{run_dir}': the data does not give the split recorded "
                            f"in {SPLIT_FILE} ({differ} file(s) differ)")


def _recorded_inputs(run_dir: Path, info: ModelInfo, moved: Sequence[SourceConfig]) -> dict[str, Any]:
    """The sources (`moved` ones if given) and holdout folders recorded in model.json."""
    training = info.training if isinstance(info.training, dict) else {}
    sources = training.get("sources")
    if sources is None and isinstance(training.get("data_dir"), str):  # a run of version 0.1
        sources = [{"path": training["data_dir"]}]
    holdouts = training.get("holdout_dirs", [])
    if not moved and not (isinstance(sources, list) and sources):
        raise MelanomaError(f"run '{run_dir}' does not record its data folder; give it with --data")
    if not isinstance(holdouts, list) or not all(isinstance(p, str) for p in holdouts):
        raise MelanomaError(f"model info '{run_dir / INFO_FILE}': 'training.holdout_dirs' must be "
                            "a list of folders")
    if moved:
        sources = [{**dataclasses.asdict(spec), "path": str(Path(spec.path).absolute())} for spec in moved]
    try:
        specs = [SourceConfig(**source) for source in sources]
    except TypeError as exc:
        raise MelanomaError(f"model info '{run_dir / INFO_FILE}': 'training.sources' is damaged") from exc
    return {"data_dir": specs[0].path, "sources": [dataclasses.asdict(s) for s in specs],
            "holdout_dirs": holdouts}


def resume(run_dir: Path, sources: Sequence[SourceConfig] = (),
           progress: ProgressHook | None = None) -> TrainResult:
    """Continue the run in `run_dir` from its last completed epoch, with its own config.

    The sources and holdout folders are the ones recorded in model.json; `sources` replace
    them (e.g. after the data moved). The split must come out the same.
    """
    report = progress or (lambda kind, values: None)
    run_dir = Path(run_dir)
    config, info, state = _load_run(run_dir)
    record = _recorded_inputs(run_dir, info, sources)
    specs = [SourceConfig(**source) for source in record["sources"]]
    report("status", {"message": f"resuming '{run_dir}' after epoch {state.epochs_done}: "
                                 "scanning and decoding " + ", ".join(s.path for s in specs)})
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, sources=[]))
    data = prepare_data(config, specs, [Path(p) for p in record["holdout_dirs"]])
    _check_same_data(run_dir, info, data)
    return _train_run(_Run(config, run_dir, data, record, state, report))


def read_history(out: Path) -> list[dict[str, str]]:
    """The rows of a run's history.csv."""
    path = out / HISTORY_FILE
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
