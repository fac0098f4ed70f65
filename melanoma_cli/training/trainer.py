"""How a run's model is made ready to train: built or restored, stage by stage, compiled.

`build_and_compile` and `restore` are the only places a model is created for training (`fit`
calls them inside the distribution strategy's scope, training/distribute.py); the loss,
optimizer, class weights and per-stage callbacks come from here too, so `train` and the
benchmarks train the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.config import Config, StageConfig
from melanoma_cli.utils.tensorflow import import_keras


def lower_is_better(monitor: str) -> bool:
    """Whether the monitored metric improves downwards (a loss) rather than upwards."""
    return monitor.endswith("loss")


def stages(config: Config) -> list[StageConfig]:
    """The training stages: `train.stages`, or one all-trainable stage of `train.epochs`."""
    if config.train.stages:
        return config.train.stages
    train = config.train
    return [StageConfig(epochs=train.epochs, learning_rate=train.learning_rate, trainable="all")]


def total_epochs(config: Config) -> int:
    """Epochs over all stages."""
    return sum(stage.epochs for stage in stages(config))


def remaining_stages(config: Config, epochs_done: int) -> list[tuple[StageConfig, int, int, int]]:
    """(stage, its first epoch, the epoch to start at, its end) for the stages not yet finished.

    Epochs are counted from 0 here, as Keras's `initial_epoch` and `epochs` count them.
    """
    remaining, start = [], 0
    for stage in stages(config):
        end = start + stage.epochs
        if end > epochs_done:
            remaining.append((stage, start, max(start, epochs_done), end))
        start = end
    return remaining


def make_optimizer(config: Config, learning_rate: float, steps: int) -> Any:
    """Adam or AdamW at `learning_rate`, cosine-decayed over `steps` when the config says so."""
    keras = import_keras()
    rate: Any = learning_rate
    if config.train.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    if config.train.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.train.weight_decay)
    return keras.optimizers.Adam(rate)


def make_loss(config: Config) -> Any:
    """The training loss: categorical cross-entropy with the config's label smoothing."""
    keras = import_keras()
    return keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency loss weights ('balanced'); 1.0 for a class absent from `labels`."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = dict.fromkeys(range(num_classes), 1.0)
    result.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return result


def class_weights(config: Config, train_labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """The loss weight of each class when `train.class_weights` is on, else None."""
    return balanced_class_weights(train_labels, num_classes) if config.train.class_weights else None


def build_and_compile(config: Config, num_classes: int, stage: StageConfig, steps_per_epoch: int,
                      model: Any = None) -> Any:
    """A new model (or `model`) with the stage's part trainable and a fresh optimizer.

    The optimizer's schedule spans the stage (`stage.epochs * steps_per_epoch` steps).
    """
    from melanoma_cli.models.build import build_model

    if model is None:
        model = build_model(config.model, num_classes, config.data.image_size)
    if config.model.backbone != "none":
        from melanoma_cli.models.backbones.registry import set_trainable

        set_trainable(model, config.model.backbone, stage.trainable)
    model.compile(optimizer=make_optimizer(config, stage.learning_rate, stage.epochs * steps_per_epoch),
                  loss=make_loss(config), metrics=["accuracy"])
    return model


def restore(path: Path) -> Any:
    """The model of an interrupted run, compiled, with its optimizer state (to go on mid-stage)."""
    from melanoma_cli.models.saving import load_network

    return load_network(path, compile=True, what="cannot resume: checkpoint")


def stage_callbacks(config: Config) -> list:
    """Early stopping and plateau schedule, fresh for each stage."""
    keras = import_keras()
    mode = "min" if lower_is_better(config.train.monitor) else "max"
    callbacks = []
    if config.train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            config.train.monitor, patience=config.train.early_stopping_patience, mode=mode))
    if config.train.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            config.train.monitor, factor=0.5, patience=2, mode=mode))
    return callbacks
