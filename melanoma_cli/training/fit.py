"""The fit loop: staged training from any completed epoch, validation, and interrupts.

SIGINT and SIGTERM stop training after the current batch: the handler only sets a flag, so no
exception is thrown through TensorFlow's native code. A second signal stops at once, but never
in the middle of writing an epoch's files (see `RunRecord.save_epoch`).

Resuming goes on with the stage the run was in: within a stage the restored optimizer state
carries over; at a stage boundary the optimizer restarts, as in an uninterrupted run.
Shuffling, augmentation and early-stopping patience restart too, so a resumed run is close to,
not bit-identical with, an uninterrupted one.
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from melanoma_cli.config import Config
from melanoma_cli.training.distribute import Distribution
from melanoma_cli.training.linear_probe import ensemble_probabilities
from melanoma_cli.training.panel import PanelSet, epoch_scores
from melanoma_cli.training.run_record import RunRecord
from melanoma_cli.training.trainer import (
    build_and_compile,
    make_loss,
    remaining_stages,
    restore,
    stage_callbacks,
    total_epochs,
)
from melanoma_cli.utils.progress import Progress
from melanoma_cli.utils.tensorflow import import_keras


class Interrupts:
    """SIGINT and SIGTERM request a stop at the next batch (`on_request` hears it at once); a
    second one raises KeyboardInterrupt, except while an epoch's files are written (then it is
    raised when they are). With `at_once`, the first one raises KeyboardInterrupt."""

    def __init__(self, on_request: Callable[[], None] = lambda: None, at_once: bool = False) -> None:
        self.on_request = on_request
        self.at_once = at_once
        self.requested = False
        self.holding = False
        self.pending = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.at_once:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = True
            self.on_request()
        elif self.holding:
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
        """Hold a forced stop back for the duration; one that arrived is raised at the end."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def validation_loss(config: Config, labels: np.ndarray, probabilities: np.ndarray,
                    class_weight: dict[int, float] | None) -> float:
    """The training loss on validation: same label smoothing, same class weights.

    Per-image losses averaged here, not by the loss object, which divides by the number of
    replicas inside a distribution strategy's scope.
    """
    targets = np.eye(probabilities.shape[1], dtype=np.float32)[labels]
    per_image = np.asarray(make_loss(config).call(targets, probabilities), dtype=np.float64)
    if class_weight is not None:
        per_image *= np.array([class_weight[int(k)] for k in labels])
    return float(per_image.mean())


@dataclass
class TrainingData:
    """What the fit loop trains and validates on."""

    train: Any  # a tf.data.Dataset of (images, one-hot labels)
    validation: Any  # a tf.data.Dataset of images, in `val_labels` order
    train_images: int
    val_labels: np.ndarray
    num_classes: int
    steps_per_epoch: int
    class_weight: dict[int, float] | None
    val_probe: np.ndarray | None = None  # the fixed linear probe's validation probabilities, if any
    panel: list[PanelSet] = field(default_factory=list)  # other clinics scored every epoch
    melanoma_index: int | None = None


def _callbacks(config: Config, data: TrainingData, record: RunRecord, interrupts: Interrupts,
               report: Progress) -> list:
    """Validation (first: it adds val_* to the logs), then the epoch's files, then progress."""
    from sklearn.metrics import balanced_accuracy_score

    keras = import_keras()
    labels = data.val_labels

    class StopWhenAsked(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if interrupts.requested:
                self.model.stop_training = True

    class WholeEpochCallback(keras.callbacks.Callback):
        """Acts at an epoch's end only when the epoch ran to the end: one cut short by an
        interrupt is neither scored, saved nor reported."""

        def on_epoch_end(self, epoch, logs=None):
            if not interrupts.requested:
                self.on_whole_epoch_end(epoch, logs)

        def on_whole_epoch_end(self, epoch: int, logs: dict) -> None:
            raise NotImplementedError

    def scores(probabilities: np.ndarray, prefix: str) -> dict[str, float]:
        predicted = probabilities.argmax(axis=1)
        with warnings.catch_warnings():  # a class predicted but absent from validation is fine
            warnings.simplefilter("ignore", UserWarning)
            balanced = float(balanced_accuracy_score(labels, predicted))
        return {f"{prefix}loss": validation_loss(config, labels, probabilities, data.class_weight),
                f"{prefix}accuracy": float((predicted == labels).mean()),
                f"{prefix}balanced_accuracy": balanced}

    def shipped(probabilities: np.ndarray, probe: np.ndarray | None) -> np.ndarray:
        return probabilities if probe is None else ensemble_probabilities(probabilities, probe)

    class ValidationMetrics(WholeEpochCallback):
        """val_* score the model that ships: with a linear probe, the ensemble (the probe is fixed
        before epoch 1, so only the fine-tuned member changes); val_member_* the member alone."""

        def on_whole_epoch_end(self, epoch, logs):
            probabilities = self.model.predict(data.validation, verbose=0)
            validation = shipped(probabilities, data.val_probe)
            logs.update(scores(validation, "val_"))
            if data.val_probe is not None:
                logs.update(scores(probabilities, "val_member_"))
            if data.melanoma_index is not None:
                melanoma = data.melanoma_index
                members = [shipped(self.model.predict(member.dataset, verbose=0), member.probe)
                           for member in data.panel]
                logs.update(epoch_scores(labels == melanoma, validation[:, melanoma], data.panel,
                                         [p[:, melanoma] for p in members]))

    class Recorder(WholeEpochCallback):
        def on_whole_epoch_end(self, epoch, logs):
            with interrupts.held():
                record.save_epoch(self.model, epoch + 1, {k: float(v) for k, v in logs.items()})

    class Reporter(WholeEpochCallback):
        def on_train_batch_end(self, batch, logs=None):
            report("batch", {"batch": batch + 1})

        def on_whole_epoch_end(self, epoch, logs):
            report("epoch", {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})

    return [StopWhenAsked(), ValidationMetrics(), Recorder(), Reporter()]


def fit(config: Config, data: TrainingData, record: RunRecord, report: Progress,
        distribution: Distribution) -> bool:
    """Train the stages left after `record.state.epochs_done`; True when interrupted.

    The model is built or restored, compiled and trained in the distribution's strategy scope.
    """
    done = record.state.epochs_done
    report("start", {"epochs": total_epochs(config), "steps": data.steps_per_epoch, "done": done,
                     "train": data.train_images, "validation": len(data.val_labels)})
    interrupts = Interrupts(lambda: report("status", {
        "message": "interrupted: stopping after the current batch (press Ctrl-C again to stop at once, "
                   "losing the epoch)"}))
    stopper, validation, recorder, reporter = _callbacks(config, data, record, interrupts, report)
    try:
        with interrupts.installed(), distribution.strategy.scope():
            model = distribution.adopt(restore(record.run.last)) if done else None
            for stage, stage_start, first, end in remaining_stages(config, done):
                if first == stage_start:  # mid-stage, the restored model keeps its optimizer
                    model = distribution.adopt(build_and_compile(
                        config, data.num_classes, stage, data.steps_per_epoch, model))
                callbacks = [stopper, validation, *stage_callbacks(config), recorder, reporter]
                model.fit(data.train, epochs=end, initial_epoch=first, class_weight=data.class_weight,
                          callbacks=callbacks, shuffle=False, verbose=0)
                if interrupts.requested:
                    return True
    except KeyboardInterrupt:
        return True
    return False
