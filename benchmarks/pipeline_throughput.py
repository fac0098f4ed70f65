"""Input pipeline alone vs the model's consumption rate: the pipeline must never be the bottleneck.

For final.yaml: img/s of decoded, augmented, batched training tensors out of the project's tf.data
pipeline (nothing else running), against img/s of training steps fed one fixed in-memory batch
(no pipeline at all), for each fine-tuning stage; the pipeline with the fused augmentation and
with the former Keras-layers augmentation, alternating in the same child. The same for the original recipe
(`image_dataset_from_directory` decoding JPEGs from disk; its small CNN). Each recipe runs in its
own child process; ratio = pipeline / model, and should be >= 5.

With `--caches`: only the image cache of final.yaml, `data.cache: ram` against `disk`, each in
its own child: seconds to scan, decode and split into the cache, img/s of the fused training
pipeline reading it, the child's peak RSS, and its resident memory at the end split into
anonymous (the process's own) and file-backed (the memory-mapped cache: page cache the system
can reclaim).

    python benchmarks/pipeline_throughput.py [--data DIR] [--steps 20] [--warmup 3] [--caches]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AUGMENTERS, augmenter, data_args, emit, run_child, step_parser
from train_throughput import BATCH, SEED, SIZE, original_model, parse_path


def pipeline_rate(dataset: Any, warmup: int, steps: int) -> float:
    """Images per second coming out of `dataset` (batches pulled and materialised)."""
    batches = iter(dataset.repeat())
    for _ in range(warmup):
        next(batches)
    started, images = time.perf_counter(), 0
    for _ in range(steps):
        x = next(batches)[0]
        images += int(x.shape[0])
    return images / (time.perf_counter() - started)


def model_rate(model: Any, x: Any, y: Any, warmup: int, steps: int) -> float:
    """Images per second of training steps on one fixed batch already in memory."""
    for _ in range(warmup):
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return len(x) * steps / (time.perf_counter() - started)


def final_child(data: list[str], warmup: int, steps: int, overrides: list[str]) -> dict[str, Any]:
    import numpy as np

    from melanoma_cli.config import load_config
    from melanoma_cli.data.pipeline import make_dataset
    from melanoma_cli.data.preparation import prepare_data
    from melanoma_cli.data.sources import parse_source
    from melanoma_cli.training.trainer import build_and_compile
    from melanoma_cli.utils.tensorflow import seed_everything

    config = load_config("final.yaml", overrides)
    prepared = prepare_data(config, [parse_source(source) for source in data])
    seed_everything(config.seed)
    classes = len(prepared.classes)
    pipelines = {}
    for name in (*AUGMENTERS, *AUGMENTERS):  # twice, alternating: the best of two per augmenter
        dataset = make_dataset(prepared.train_images, prepared.train_labels, classes, BATCH,
                               shuffle=True, augmenter=augmenter(name, config), seed=config.seed)
        pipelines[name] = max(pipelines.get(name, 0.0), pipeline_rate(dataset, warmup, steps))
    x = prepared.train_images[:BATCH].astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[prepared.train_labels[:BATCH]]
    stages, model = [], None
    for stage in config.train.stages:
        model = build_and_compile(config, classes, stage, 1000, model)
        consumed = model_rate(model, x, y, warmup, steps)
        stages.append({"trainable": stage.trainable, "model_img_per_s": round(consumed, 1),
                       **{f"ratio_{name}": round(pipelines[name] / consumed, 1) for name in AUGMENTERS}})
    return {"recipe": "final.yaml", "data": data, "image_size": config.data.image_size,
            **{f"pipeline_img_per_s_{name}": round(pipelines[name], 1) for name in AUGMENTERS},
            "stages": stages, "ratio": min(s["ratio_fused"] for s in stages)}


def resident_mb() -> dict[str, float]:
    """This process's resident memory now: anonymous and file-backed (Linux /proc)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            fields[f"{name[3:].lower()}_mb"] = round(int(value.split()[0]) / 1024, 1)
    return fields


def cache_child(data: list[str], warmup: int, steps: int, overrides: list[str]) -> dict[str, Any]:
    from melanoma_cli.config import load_config
    from melanoma_cli.data.pipeline import build_augmenter, make_dataset
    from melanoma_cli.data.preparation import prepare_data
    from melanoma_cli.data.sources import parse_source

    config = load_config("final.yaml", overrides)
    started = time.perf_counter()
    prepared = prepare_data(config, [parse_source(source) for source in data])
    prepare_s = time.perf_counter() - started
    after_prepare = resident_mb()
    dataset = make_dataset(prepared.train_images, prepared.train_labels, len(prepared.classes), BATCH,
                           shuffle=True, augmenter=build_augmenter(config.augment, config.seed),
                           seed=config.seed)
    rate = pipeline_rate(dataset, warmup, steps)
    cache = prepared.train_images.cache
    return {"cache": config.data.cache, "data": data, "image_size": config.data.image_size,
            "cached_images": len(cache), "cache_gb": round(cache.array.nbytes / 1e9, 2),
            "train_images": len(prepared.train_labels), "prepare_s": round(prepare_s, 1),
            "pipeline_img_per_s": round(rate, 1), "after_prepare": after_prepare, "at_end": resident_mb()}


def original_child(data: Path, warmup: int, steps: int) -> dict[str, Any]:
    from melanoma_cli.utils.tensorflow import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    train = keras.utils.image_dataset_from_directory(
        data, validation_split=0.2, subset="training", seed=SEED, image_size=(SIZE, SIZE),
        batch_size=BATCH)
    pipeline = pipeline_rate(train, warmup, steps)
    model = original_model(keras, len(train.class_names))
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = next(iter(train))
    consumed = model_rate(model, x, y, warmup, steps)
    return {"recipe": "original", "image_size": SIZE, "pipeline_img_per_s": round(pipeline, 1),
            "model_img_per_s": round(consumed, 1), "ratio": round(pipeline / consumed, 1)}


def main() -> None:
    parser = step_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=["final", "original", "cache"], help=argparse.SUPPRESS)
    parser.add_argument("--skip-original", action="store_true", help="measure final.yaml only")
    parser.add_argument("--caches", action="store_true",
                        help="only compare data.cache: ram vs disk (peak RSS, pipeline img/s)")
    args = parser.parse_args()
    data = data_args(args)
    if args.child == "final":
        print(json.dumps(final_child(data, args.warmup, args.steps, args.overrides)))
        return
    if args.child == "cache":
        print(json.dumps(cache_child(data, args.warmup, args.steps, args.overrides)))
        return
    if args.child == "original":
        print(json.dumps(original_child(Path(parse_path(data[0])), args.warmup, args.steps)))
        return
    common = [sys.executable, __file__, *(f"--data={source}" for source in data),
              "--steps", str(args.steps), "--warmup", str(args.warmup),
              *(f"--set={override}" for override in args.overrides)]
    if args.caches:
        for cache in ("ram", "disk"):
            child = run_child([*common, f"--set=data.cache={cache}", "--child", "cache"])
            emit("pipeline_cache", **child.last_json(), peak_rss_mb=child.peak_rss_mb,
                 wall_s=round(child.wall_s, 1), steps=args.steps, warmup=args.warmup,
                 overrides=args.overrides)
        return
    for recipe in ("final",) if args.skip_original else ("original", "final"):
        child = run_child([*common, "--child", recipe])
        emit("pipeline_throughput", **child.last_json(), steps=args.steps, warmup=args.warmup,
             overrides=args.overrides)


if __name__ == "__main__":
    main()
