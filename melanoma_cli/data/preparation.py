"""Training data for one run: scan and decode, clean, split, and rebalance the training split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from melanoma_cli.config import Config, SourceConfig
from melanoma_cli.data.cache import CachedImages
from melanoma_cli.data.dedupe import HoldoutIndex
from melanoma_cli.data.images import Unreadable, iter_image_files
from melanoma_cli.data.scan import DatasetScan, ImageFile, fingerprint_files, scan_sources
from melanoma_cli.data.split import Split, split_dataset
from melanoma_cli.utils.errors import MelanomaError


@dataclass
class PreparedData:
    """Decoded images for one run (rows of one `ImageCache`), with the record of how they were made."""

    classes: list[str]
    train_images: CachedImages
    train_labels: np.ndarray
    val_images: CachedImages
    val_labels: np.ndarray
    split: Split
    skipped: list[Unreadable] = field(default_factory=list)
    generated: dict[str, int] = field(default_factory=dict)
    unreadable_by_class: dict[str, int] = field(default_factory=dict)


def holdout_index(folders: Sequence[Path], files: Sequence[Path] = ()) -> HoldoutIndex:
    """What identifies every image file below the holdout folders (any layout, any format) and the
    other held-out `files` (e.g. the panel sets')."""
    for folder in folders:
        if not folder.is_dir():
            raise MelanomaError(f"holdout folder '{folder}' does not exist or is not a folder")
    paths = [p for p in [*iter_image_files(folders), *files] if p.is_file()]  # a broken link holds nothing
    images, _ = fingerprint_files(paths)
    return HoldoutIndex.of(images)


def _images(files: list[ImageFile], scan: DatasetScan) -> tuple[CachedImages, np.ndarray]:
    """The images the scan decoded for `files` (their rows of its cache, no copy) and their labels."""
    rows = np.array([scan.rows[f.path] for f in files], dtype=np.int64)
    labels = np.array([scan.classes.index(f.label) for f in files], dtype=np.int64)
    return CachedImages(scan.cache, rows), labels


def _rebalance_train(data: PreparedData, config: Config) -> None:
    """Append Augmentor samples to the cache and to the training split only (never to validation)."""
    from melanoma_cli.data.rebalance import generate_samples, plan_rebalance

    counts = {name: int((data.train_labels == i).sum()) for i, name in enumerate(data.classes)}
    plan = plan_rebalance(counts, config.rebalance.target)
    cache = data.train_images.cache
    new_rows, new_labels = [data.train_images.rows], [data.train_labels]
    for index, name in enumerate(data.classes):
        sources = data.train_images[data.train_labels == index]
        samples = generate_samples(list(sources), plan[name], config.rebalance, config.seed + index)
        if samples:
            new_rows.append(cache.extend(np.stack([image for _, image in samples])))
            new_labels.append(np.full(len(samples), index, dtype=np.int64))
    data.generated = {name: n for name, n in plan.items() if n}
    data.train_images = CachedImages(cache, np.concatenate(new_rows))
    data.train_labels = np.concatenate(new_labels)


def _check_classes(scan: DatasetScan, expected: list[str] | None) -> None:
    """At least two classes, every one with an image, and the configured ones if given."""
    folders = len(scan.sources) == 1 and scan.sources[0].kind == "folders"
    if expected is not None and set(expected) != set(scan.classes):
        missing = ", ".join(repr(c) for c in expected if c not in scan.classes)
        extra = ", ".join(repr(c) for c in scan.classes if c not in expected)
        found = "; ".join(text for text in (missing and f"missing {missing}",
                                            extra and f"unexpected {extra}") if text)
        what = "class folders" if folders else "classes"
        raise MelanomaError(f"{what} in {scan.where} do not match config key 'data.classes': {found}")
    if len(scan.classes) < 2:
        what = "data folder" if folders else "data in"
        raise MelanomaError(f"{what} {scan.where} has only one class{' folder' if folders else ''} "
                            f"('{scan.classes[0]}'); a classifier needs at least two")
    empty = [name for name, n in scan.counts().items() if n == 0]
    if empty:
        where = f"class folder '{scan.root / empty[0]}'" if folders else f"class '{empty[0]}'"
        raise MelanomaError(f"{where} has no readable images")


def prepare_data(config: Config, sources: Sequence[SourceConfig] = (),
                 holdout_dirs: Sequence[Path] = (), holdout_files: Sequence[Path] = ()) -> PreparedData:
    """Scan and decode the sources (the config's, then `sources`) into the `data.cache`,
    de-duplicate, split, rebalance."""
    near, size = config.data.near_duplicate_distance, config.data.image_size
    scan = scan_sources([*config.data.sources, *sources], config.data.classes,
                        perceptual_hash=near is not None, image_size=size, cache=config.data.cache)
    _check_classes(scan, config.data.classes)
    split = split_dataset(
        scan,
        config.data.validation_split,
        config.seed,
        drop_conflicts=config.data.drop_conflicts,
        holdout=holdout_index(holdout_dirs, holdout_files),
        min_images_per_class=config.data.min_images_per_class,
        trust_sources=config.data.trust_sources,
        near_duplicate_distance=near,
        validation_source=config.data.validation_source,
    )
    train_images, train_labels = _images(split.train, scan)
    val_images, val_labels = _images(split.validation, scan)
    data = PreparedData(scan.classes, train_images, train_labels, val_images, val_labels, split,
                        list(scan.unreadable), unreadable_by_class=dict(scan.unreadable_by_class))
    if config.rebalance.enabled:
        _rebalance_train(data, config)
    return data
