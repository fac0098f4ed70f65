"""Class rebalancing with Augmentor: new samples made from a class's own images, seeded.

In memory for training's split (generate_samples), or into a new folder (rebalance_folder).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from melanoma_cli.config import RebalanceConfig
from melanoma_cli.data.images import load_rgb
from melanoma_cli.data.scan import DatasetScan, ImageFile, scan_dataset
from melanoma_cli.data.sources import IMAGES_DIR, LABELS_FILE, is_csv_source
from melanoma_cli.utils.atomic import write_text
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.progress import Progress, no_progress

MARKER = ".melanoma-rebalance.json"  # marks a folder written by rebalance_folder


def plan_rebalance(counts: dict[str, int], target: int | None) -> dict[str, int]:
    """How many new images each class needs to reach `target` (default: the largest class)."""
    goal = target if target is not None else max(counts.values(), default=0)
    return {name: max(0, goal - n) if n > 0 else 0 for name, n in counts.items()}


def build_pipeline(config: RebalanceConfig, sources: Sequence[np.ndarray]):
    """An Augmentor pipeline over `sources` with dermoscopy-safe operations.

    No hue shifts and no warps: rotation, flips, zoom, brightness and contrast only.
    Each sample's label is the index of the source image it was made from.
    """
    import Augmentor

    pipeline = Augmentor.DataPipeline([[np.asarray(s)] for s in sources], list(range(len(sources))))
    if config.rotate_probability > 0 and config.max_rotation > 0:
        pipeline.rotate(config.rotate_probability, config.max_rotation, config.max_rotation)
    if config.flip_probability > 0:
        pipeline.flip_left_right(config.flip_probability)
        pipeline.flip_top_bottom(config.flip_probability)
    if config.zoom_probability > 0 and config.max_zoom > 1:
        pipeline.zoom(config.zoom_probability, 1.0, config.max_zoom)
    if config.brightness_probability > 0 and config.max_brightness_change > 0:
        change = config.max_brightness_change
        pipeline.random_brightness(config.brightness_probability, 1 - change, 1 + change)
    if config.contrast_probability > 0 and config.max_contrast_change > 0:
        change = config.max_contrast_change
        pipeline.random_contrast(config.contrast_probability, 1 - change, 1 + change)
    return pipeline


@contextmanager
def _seeded_global_random(seed: int) -> Iterator[None]:
    """Augmentor draws from the global RNGs: seed them, and restore them afterwards."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def generate_samples(
    sources: Sequence[np.ndarray], count: int, config: RebalanceConfig, seed: int
) -> list[tuple[int, np.ndarray]]:
    """Make `count` augmented images from randomly drawn sources.

    Returns (index of the source image, new image) pairs; the same inputs give the same output.
    """
    if count <= 0 or not sources:
        return []
    pipeline = build_pipeline(config, sources)
    with _seeded_global_random(seed):
        images, indices = pipeline.sample(count)
    return [
        (int(i), np.asarray(image[0], dtype=np.uint8))
        for i, image in zip(indices, images, strict=True)
    ]


def check_destination(source: Path, out: Path, overwrite: bool) -> None:
    """Refuse outputs that could touch the source or clobber something that is not ours."""
    src, dst = Path(os.path.realpath(source)), Path(os.path.realpath(out))  # no error on link loops
    if dst.is_relative_to(src):
        raise MelanomaError(f"output folder '{out}' is inside the source folder '{source}'; "
                            "the source is never written to")
    if src.is_relative_to(dst):
        raise MelanomaError(f"source folder '{source}' is inside the output folder '{out}'")
    if not out.exists():
        return
    if not out.is_dir():
        raise MelanomaError(f"output '{out}' exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise MelanomaError(f"output folder '{out}' is not empty (use --overwrite to replace "
                            "a previous rebalance output)")
    if not (out / MARKER).is_file():
        raise MelanomaError(f"output folder '{out}' is not empty and is not a previous rebalance "
                            f"output (no {MARKER}); refusing to replace it")


def _write_class(
    folder: Path, files: list[ImageFile], count: int, config: RebalanceConfig, seed: int
) -> None:
    """Copy a class's originals into `folder`, then add `count` Augmentor samples."""
    folder.mkdir()
    for image in files:
        shutil.copy2(image.path, folder / image.path.name)
    if count <= 0 or not files:
        return
    samples = generate_samples([load_rgb(f.path) for f in files], count, config, seed)
    number = 0
    for index, array in samples:
        stem = f"aug_{files[index].path.stem}"
        while (path := folder / f"{stem}_{number:04d}.jpg").exists():
            number += 1
        Image.fromarray(array).save(path, "JPEG", quality=95)
        number += 1


def _move_into_place(staging: Path, out: Path) -> None:
    """Swap the finished staging folder in for `out` (a previous output is removed after)."""
    if not out.exists():
        staging.rename(out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)  # put the previous output back
        raise
    shutil.rmtree(old)


def _summary(scan: DatasetScan, plan: dict[str, int], goal: int, seed: int,
             config: RebalanceConfig) -> dict[str, Any]:
    before = scan.counts()
    classes = {name: {"before": n, "generated": plan[name], "after": n + plan[name]}
               for name, n in before.items()}
    return {
        "source": str(scan.root),
        "target": goal,
        "seed": seed,
        "classes": classes,
        "total": {key: sum(row[key] for row in classes.values())
                  for key in ("before", "generated", "after")},
        "skipped": [{"path": str(u.path), "reason": u.reason} for u in scan.unreadable],
        "not_copied": [str(p) for p in [*scan.nested, *scan.outside_classes]],
        "duplicate_groups": len(scan.duplicate_groups()),
        "conflict_groups": len(scan.conflict_groups()),
        "operations": {k: v for k, v in config.model_dump().items()
                       if k not in ("enabled", "target")},
    }


def rebalance_folder(
    source: Path | str,
    out: Path | str,
    target: int | None,
    config: RebalanceConfig,
    seed: int,
    overwrite: bool = False,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Write a copy of `source` to `out` with every class grown to `target` by Augmentor.

    Originals are copied byte for byte (unreadable files are skipped), new images are
    `<out>/<class>/aug_<source stem>_<nnnn>.jpg`. The source is only read. `out` appears
    complete or not at all: everything is written to a folder beside it, renamed at the end.
    """
    source, out = Path(source), Path(out)
    if is_csv_source(source):
        raise MelanomaError(f"'{source}' is a labels-CSV source ({LABELS_FILE} beside {IMAGES_DIR}/); "
                            "rebalance copies a folder-per-class dataset only (to rebalance this "
                            "source, train with --set rebalance.enabled=true)")
    check_destination(source, out, overwrite)
    progress("status", {"message": f"scanning {source}"})
    scan = scan_dataset(source)
    counts = scan.counts()
    if not sum(counts.values()):
        raise MelanomaError(f"data folder '{source}' has no readable images "
                            f"({len(scan.unreadable)} unreadable file(s) in its class folders)")
    goal = target if target is not None else max(counts.values(), default=0)
    plan = plan_rebalance(counts, goal)
    summary = _summary(scan, plan, goal, seed, config)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for index, name in enumerate(scan.classes):
            progress("status", {"message": f"{name}: copying {counts[name]}, generating {plan[name]}"})
            files = [f for f in scan.images if f.label == name]
            _write_class(staging / name, files, plan[name], config, seed + index)
        write_text(staging / MARKER, json.dumps(summary, indent=2) + "\n")
        _move_into_place(staging, out)
    except OSError as exc:
        where = f" ('{exc.filename}')" if exc.filename else ""
        raise MelanomaError(f"output folder '{out}' cannot be written: {exc.strerror or exc}{where}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**summary, "out": str(out)}
