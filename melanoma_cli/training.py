"""The fit loop: data preparation, staged training, best checkpoint, and the run folder."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.atomic import write_text, write_with
from melanoma_cli.config import Config, StageConfig
from melanoma_cli.dataset import DatasetScan, ImageFile, scan_dataset
from melanoma_cli.errors import MelanomaError
from melanoma_cli.images import Unreadable, decode_many, iter_image_files
from melanoma_cli.metrics import summary, threshold_for_sensitivity
from melanoma_cli.runs import MODEL_FILE, ModelInfo, prepare_run_folder, runtime_versions
from melanoma_cli.split import Split, split_dataset
from melanoma_cli.tf_runtime import import_keras, seed_everything

ProgressHook = Callable[[str, dict[str, Any]], None]


@dataclass
class PreparedData:
    """Decoded arrays for one run, with the record of how they were made."""

    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    split: Split
    skipped: list[Unreadable] = field(default_factory=list)
    generated: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What `train` hands back to the command line."""

    run_dir: Path
    best_epoch: int | None
    validation: dict
    interrupted: bool
    skipped: list[Unreadable]
    summary: dict


def _holdout_hashes(folders: Sequence[Path]) -> set[str]:
    """Content hashes of every image file below the holdout folders (any layout)."""
    hashes: set[str] = set()
    for folder in folders:
        if not folder.is_dir():
            raise MelanomaError(f"holdout folder '{folder}' does not exist or is not a folder")
        for path in iter_image_files([folder]):
            try:
                hashes.add(hashlib.sha256(path.read_bytes()).hexdigest())
            except OSError as exc:
                raise MelanomaError(f"holdout file '{path}' cannot be read: {exc.strerror}") from exc
    return hashes


def _decode(files: list[ImageFile], classes: list[str], size: int, skipped: list[Unreadable]):
    images, kept, failures = decode_many([f.path for f in files], size)
    skipped.extend(failures)
    labels = np.array([classes.index(files[i].label) for i in kept], dtype=np.int64)
    return images, labels


def _rebalance_train(data: PreparedData, config: Config) -> None:
    """Append Augmentor samples to the training arrays only (never to validation)."""
    from melanoma_cli.rebalance import generate_samples, plan_rebalance

    counts = {name: int((data.train_labels == i).sum()) for i, name in enumerate(data.classes)}
    plan = plan_rebalance(counts, config.rebalance.target)
    new_images, new_labels = [data.train_images], [data.train_labels]
    for index, name in enumerate(data.classes):
        sources = data.train_images[data.train_labels == index]
        samples = generate_samples(list(sources), plan[name], config.rebalance, config.seed + index)
        if samples:
            new_images.append(np.stack([image for _, image in samples]))
            new_labels.append(np.full(len(samples), index, dtype=np.int64))
    data.generated = {name: n for name, n in plan.items() if n}
    data.train_images = np.concatenate(new_images)
    data.train_labels = np.concatenate(new_labels)


def prepare_data(config: Config, data_dir: Path, holdout_dirs: Sequence[Path] = ()) -> PreparedData:
    """Scan, clean, split, decode and (optionally) rebalance the training split."""
    scan: DatasetScan = scan_dataset(data_dir)
    empty = [name for name, n in scan.counts().items() if n == 0]
    if empty:
        raise MelanomaError(f"class folder '{data_dir / empty[0]}' has no readable images")
    split = split_dataset(
        scan,
        config.data.validation_split,
        config.seed,
        drop_conflicts=config.data.drop_conflicts,
        holdout_hashes=_holdout_hashes(holdout_dirs),
        min_images_per_class=config.data.min_images_per_class,
    )
    skipped = list(scan.unreadable)
    size = config.data.image_size
    train_images, train_labels = _decode(split.train, scan.classes, size, skipped)
    val_images, val_labels = _decode(split.validation, scan.classes, size, skipped)
    data = PreparedData(scan.classes, train_images, train_labels, val_images, val_labels, split, skipped)
    if config.rebalance.enabled:
        _rebalance_train(data, config)
    return data


def _make_callbacks(keras, val_dataset, val_labels, monitor, checkpoint_path, progress):
    """Callbacks shared by every stage: validation metrics first, then the checkpoint."""

    class ValidationMetrics(keras.callbacks.Callback):
        """One pass over validation per epoch: loss, accuracy and balanced accuracy."""

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

    class BestCheckpoint(keras.callbacks.Callback):
        """Save the model atomically whenever the monitored value improves (across stages)."""

        def __init__(self, monitor: str):
            super().__init__()
            self.monitor = monitor
            self.sign = -1.0 if monitor.endswith("loss") else 1.0
            self.best: float | None = None
            self.best_epoch: int | None = None

        def on_epoch_end(self, epoch, logs=None):
            value = self.sign * float(logs[self.monitor])
            if self.best is None or value > self.best:
                self.best, self.best_epoch = value, epoch + 1
                write_with(checkpoint_path, self.model.save)

    class Reporter(keras.callbacks.Callback):
        """Forward batch and epoch ends to the caller's progress hook."""

        def on_train_batch_end(self, batch, logs=None):
            progress("batch", {"batch": batch + 1})

        def on_epoch_end(self, epoch, logs=None):
            progress("epoch", {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})

    return ValidationMetrics(), BestCheckpoint(monitor), Reporter()


def _stages(config: Config) -> list[StageConfig]:
    if config.train.stages:
        return config.train.stages
    return [StageConfig(config.train.epochs, config.train.learning_rate, "all")]


def _optimizer(keras, config: Config, learning_rate: float, steps: int):
    rate: Any = learning_rate
    if config.train.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    if config.train.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.train.weight_decay)
    return keras.optimizers.Adam(rate)


def _class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = dict.fromkeys(range(num_classes), 1.0)
    result.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return result


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) stops training like Ctrl-C: the best checkpoint is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stage_callbacks(keras, config: Config) -> list:
    """Early stopping and plateau schedule, fresh for each stage."""
    mode = "min" if config.train.monitor.endswith("loss") else "max"
    callbacks = []
    if config.train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            config.train.monitor, patience=config.train.early_stopping_patience, mode=mode))
    if config.train.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            config.train.monitor, factor=0.5, patience=2, mode=mode))
    return callbacks


def _split_csv(split: Split) -> str:
    """Which file went to which side, so a run's validation set can be rebuilt exactly."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "sha256", "side"])
    for side, files in (("train", split.train), ("validation", split.validation)):
        writer.writerows([str(f.path), f.label, f.sha256, side] for f in files)
    return buffer.getvalue()


def _write_report(out: Path, payload: dict, name: str) -> None:
    write_text(out / name, json.dumps(payload, indent=2) + "\n")


def train(
    config: Config,
    data_dir: Path,
    out: Path,
    *,
    overwrite: bool = False,
    holdout_dirs: Sequence[Path] = (),
    progress: ProgressHook | None = None,
) -> TrainResult:
    """Train a model on `data_dir` and write a complete run folder to `out`."""
    from melanoma_cli.model import build_model
    from melanoma_cli.pipeline import build_augmenter, make_dataset
    from melanoma_cli.plots import plot_training_curves

    report = progress or (lambda kind, values: None)
    holdout_dirs = [Path(p) for p in [*config.data.holdout_dirs, *holdout_dirs]]
    prepare_run_folder(out, overwrite)
    report("status", {"message": f"scanning and decoding {data_dir}"})
    data = prepare_data(config, data_dir, holdout_dirs)
    write_text(out / "config.yaml", config.to_yaml())
    write_text(out / "split.csv", _split_csv(data.split))

    keras = import_keras()
    seed_everything(config.seed)
    size, batch = config.data.image_size, config.data.batch_size
    num_classes = len(data.classes)
    train_dataset = make_dataset(
        data.train_images, data.train_labels, num_classes, batch, shuffle=True,
        augmenter=build_augmenter(config.augment, config.seed), seed=config.seed,
    )
    val_dataset = make_dataset(data.val_images, None, num_classes, batch)
    model = build_model(config.model, num_classes, size)
    checkpoint_path = out / MODEL_FILE
    validation_metrics, checkpoint, reporter = _make_callbacks(
        keras, val_dataset, data.val_labels, config.train.monitor, checkpoint_path, report
    )
    history_logger = keras.callbacks.CSVLogger(str(out / "history.csv"), append=True)
    class_weight = _class_weights(data.train_labels, num_classes) if config.train.class_weights else None
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing)
    steps_per_epoch = int(np.ceil(len(data.train_labels) / batch))

    stages = _stages(config)
    total_epochs = sum(stage.epochs for stage in stages)
    report("start", {"epochs": total_epochs, "steps": steps_per_epoch,
                     "train": len(data.train_labels), "validation": len(data.val_labels)})
    done, interrupted, started = 0, False, time.perf_counter()
    try:
        with _sigterm_as_interrupt():
            for stage in stages:
                if config.model.backbone != "none":
                    from melanoma_cli.backbones.registry import set_trainable

                    set_trainable(model, config.model.backbone, stage.trainable)
                model.compile(
                    optimizer=_optimizer(keras, config, stage.learning_rate,
                                         stage.epochs * steps_per_epoch),
                    loss=loss,
                    metrics=["accuracy"],
                )
                callbacks = [validation_metrics, checkpoint, history_logger, reporter,
                             *_stage_callbacks(keras, config)]
                model.fit(train_dataset, epochs=done + stage.epochs, initial_epoch=done,
                          class_weight=class_weight, callbacks=callbacks, shuffle=False,
                          verbose=0)
                done += stage.epochs
    except KeyboardInterrupt:
        interrupted = True
    train_seconds = time.perf_counter() - started
    if checkpoint.best_epoch is None:
        raise MelanomaError(f"training stopped before the first epoch ended; nothing saved in '{out}'")

    best = keras.models.load_model(checkpoint_path, compile=False)
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
        "best_epoch": checkpoint.best_epoch,
        "monitor": config.train.monitor,
        "data": {**data.split.summary(), "generated": data.generated, "skipped": len(data.skipped)},
        "validation": validation,
        "melanoma_threshold": threshold,
    }
    training = {
        "epochs_run": epochs_run,
        "interrupted": interrupted,
        "train_seconds": round(train_seconds, 1),
        "train_images_per_second": round(epochs_run * len(data.train_labels) / train_seconds, 1),
    }
    ModelInfo(
        classes=data.classes,
        image_size=size,
        melanoma_class=melanoma if melanoma in data.classes else None,
        melanoma_threshold=threshold,
        config_hash=config.fingerprint(),
        status="incomplete" if interrupted else "complete",
        best_epoch=checkpoint.best_epoch,
        versions=runtime_versions(),
        training=training,
    ).save(out)
    _write_report(out, metrics, "metrics.json")
    plot_training_curves(out / "history.csv", out / "curves.png")
    run_summary = {"run_dir": str(out), **metrics, "training": training}
    return TrainResult(out, checkpoint.best_epoch, validation, interrupted, data.skipped, run_summary)


def read_history(out: Path) -> list[dict[str, str]]:
    """The rows of a run's history.csv."""
    import csv

    path = out / "history.csv"
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
