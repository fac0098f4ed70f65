"""Training throughput: final.yaml vs the original recipe, each in a fresh child process.

final.yaml: images decoded once into memory (plus the Augmentor-rebalanced training split; with
several `--data` sources, their de-duplicated pool), tf.data batches augmented by the fused
projective transform, EfficientNet-Lite0 fine-tuned in two stages (head, then the top 6 blocks);
each stage is also timed with the former Keras-layers augmentation, in the same child.
The original recipe: `keras.utils.image_dataset_from_directory` (JPEGs
decoded every epoch, no cache, no prefetch), 3 conv layers 32/64/128 + Flatten + Dense(128),
180x180, batch 32, Adam.

Each child times `--steps` training steps after `--warmup` steps and prints one JSON line with
img/s, seconds per step, the epoch time that implies, and its peak RSS (benchmark 4).
`--original-epochs N` also trains the original recipe for N full epochs and reports its best
validation accuracy (slow: minutes per epoch on 2 cores).

    python benchmarks/train_throughput.py [--data DIR] [--steps 20] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AUGMENTERS, augmenter, data_args, emit, run_child, step_parser

BATCH = 32
SIZE = 180
SEED = 123


def step_timer(keras: Any) -> Any:
    """A callback that records when each training step ends."""

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.ends.append(time.perf_counter())

    return StepTimer()


def timed_fit(keras: Any, model: Any, dataset: Any, warmup: int, steps: int, **fit: Any) -> float:
    """Seconds per step over `steps` steps, after `warmup` steps (tracing, allocation)."""
    timer = step_timer(keras)
    model.fit(dataset.repeat(), steps_per_epoch=warmup + steps, epochs=1, callbacks=[timer],
              verbose=0, **fit)
    return (timer.ends[-1] - timer.ends[warmup - 1]) / steps


def rates(seconds_per_step: float, train_images: int) -> dict[str, float]:
    return {
        "img_per_s": round(BATCH / seconds_per_step, 1),
        "s_per_step": round(seconds_per_step, 3),
        "epoch_s": round(math.ceil(train_images / BATCH) * seconds_per_step, 1),
    }


def final_child(data: list[str], warmup: int, steps: int, overrides: list[str]) -> dict[str, Any]:
    """final.yaml (with `overrides`) through the project's own data preparation, pipeline and model,
    on the pool of `data` sources; each stage timed with the Keras-layers augmentation (before)
    and the fused one (after), alternating, on the same prepared data."""
    from melanoma_cli.config import load_config
    from melanoma_cli.data.pipeline import make_dataset
    from melanoma_cli.data.preparation import prepare_data
    from melanoma_cli.data.sources import parse_source
    from melanoma_cli.training.trainer import build_and_compile, class_weights
    from melanoma_cli.utils.tensorflow import import_keras, seed_everything

    config = load_config("final.yaml", overrides)
    started = time.perf_counter()
    prepared = prepare_data(config, [parse_source(source) for source in data])
    prepare_s = time.perf_counter() - started
    keras = import_keras()
    classes = len(prepared.classes)
    weights = class_weights(config, prepared.train_labels, classes)
    train_images = len(prepared.train_labels)
    stages: dict[str, list[dict[str, Any]]] = {name: [] for name in AUGMENTERS}
    models: dict[str, Any] = dict.fromkeys(AUGMENTERS)
    for stage in config.train.stages:
        for name in AUGMENTERS:
            seed_everything(config.seed)
            dataset = make_dataset(prepared.train_images, prepared.train_labels, classes, BATCH,
                                   shuffle=True, augmenter=augmenter(name, config), seed=config.seed)
            models[name] = build_and_compile(config, classes, stage, math.ceil(train_images / BATCH),
                                             models[name])
            seconds = timed_fit(keras, models[name], dataset, warmup, steps, class_weight=weights)
            stages[name].append({"trainable": stage.trainable, "epochs": stage.epochs,
                                 **rates(seconds, train_images)})
    epochs = sum(stage.epochs for stage in config.train.stages)
    results = {}
    for name in AUGMENTERS:
        total_s = sum(s["epochs"] * s["epoch_s"] for s in stages[name])
        results[name] = {"stages": stages[name], "img_per_s": round(epochs * train_images / total_s, 1),
                         "epoch_s": round(total_s / epochs, 1)}
    return {"recipe": "final.yaml", "data": data, "image_size": config.data.image_size,
            "train_images": train_images, "prepare_s": round(prepare_s, 1), "augmenters": results,
            "fused_over_keras_layers": round(results["fused"]["img_per_s"]
                                             / results["keras-layers"]["img_per_s"], 2)}


def original_model(keras: Any, classes: int) -> Any:
    layers = keras.layers
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(128, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(classes),
    ])


def original_child(data: Path, warmup: int, steps: int, epochs: int) -> dict[str, Any]:
    """The original recipe, as written: no cache, no prefetch, decode from disk every epoch."""
    from melanoma_cli.utils.tensorflow import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    split = {"validation_split": 0.2, "seed": SEED, "image_size": (SIZE, SIZE), "batch_size": BATCH}
    train = keras.utils.image_dataset_from_directory(data, subset="training", **split)
    model = original_model(keras, len(train.class_names))
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train_images = len(train.file_paths)
    result = {"recipe": "original", "image_size": SIZE, "train_images": train_images,
              **rates(timed_fit(keras, model, train, warmup, steps), train_images)}
    if epochs:
        validation = keras.utils.image_dataset_from_directory(data, subset="validation", **split)
        fresh = original_model(keras, len(train.class_names))
        fresh.compile(optimizer="adam", metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = fresh.fit(train, validation_data=validation, epochs=epochs, verbose=0).history
        result["epochs"] = epochs
        result["best_val_accuracy"] = round(max(history["val_accuracy"]), 4)
        result["last_val_accuracy"] = round(history["val_accuracy"][-1], 4)
    return result


def main() -> None:
    parser = step_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--original-epochs", type=int, default=0)
    parser.add_argument("--skip-original", action="store_true", help="time final.yaml only")
    parser.add_argument("--child", choices=["final", "original"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    data = data_args(args)
    if args.child == "final":
        print(json.dumps(final_child(data, args.warmup, args.steps, args.overrides)))
        return
    if args.child == "original":
        print(json.dumps(original_child(Path(parse_path(data[0])), args.warmup, args.steps,
                                        args.original_epochs)))
        return
    common = [sys.executable, __file__, *(f"--data={source}" for source in data),
              "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--original-epochs", str(args.original_epochs),
              *(f"--set={override}" for override in args.overrides)]
    results = {}
    recipes = ("final",) if args.skip_original else ("original", "final")
    for recipe in recipes:
        child = run_child([*common, "--child", recipe])
        results[recipe] = child.last_json()
        emit("train_throughput", **results[recipe], peak_rss_mb=child.peak_rss_mb,
             steps=args.steps, warmup=args.warmup, overrides=args.overrides)
    if "original" in results:
        final = results["final"]["augmenters"]["fused"]
        emit("train_throughput_ratio",
             final_over_original_img_per_s=round(final["img_per_s"] / results["original"]["img_per_s"], 2),
             per_stage=[round(s["img_per_s"] / results["original"]["img_per_s"], 2)
                        for s in final["stages"]])


def parse_path(source: str) -> str:
    """The path of a NAME=PATH --data value."""
    from melanoma_cli.data.sources import parse_source

    return parse_source(source).path


if __name__ == "__main__":
    main()
