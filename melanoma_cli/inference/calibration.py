"""The calibration sample of a full-integer (int8) export: class-balanced, from every training source.

Int8 quantization fixes each activation's range from the images it is shown, so they should look
like what the model will meet: the same mix of cameras and clinics as training (every source) and
every class (rare classes have their own colours and textures), not the training split's nevus-heavy
proportions. The sample is seeded, so an export can be repeated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.data.images import decode_many
from melanoma_cli.data.sources import Entry, list_sources, parse_source
from melanoma_cli.runtime.run_folder import ModelInfo, recorded_sources
from melanoma_cli.utils.errors import MelanomaError

CALIBRATION_PER_CLASS = 30
CALIBRATION_SEED = 0


@dataclass
class CalibrationSample:
    """Decoded model inputs (uint8) and what model.json records about where they came from."""

    images: np.ndarray
    description: dict[str, Any]


def _balanced(entries: list[Entry], classes: list[str], per_class: int, seed: int) -> list[Entry]:
    """Up to `per_class` entries of each class, taken in turn from each source that has the class."""
    chosen: list[Entry] = []
    rng = random.Random(seed)
    for name in classes:
        by_source: dict[str, list[Entry]] = {}
        for entry in entries:
            if entry.label == name:
                by_source.setdefault(entry.source, []).append(entry)
        queues = []
        for source in sorted(by_source):
            files = sorted(by_source[source], key=lambda e: str(e.path))
            rng.shuffle(files)
            queues.append(files)
        picked: list[Entry] = []
        while len(picked) < per_class and any(queues):
            for queue in queues:
                if queue and len(picked) < per_class:
                    picked.append(queue.pop())
        chosen.extend(picked)
    return chosen


def calibration_sample(info: ModelInfo, override: list[str] | None = None,
                       per_class: int = CALIBRATION_PER_CLASS,
                       seed: int = CALIBRATION_SEED) -> CalibrationSample:
    """Decode a seeded, class-balanced sample from the run's training sources (or `override`).

    `override` holds `--calibration` arguments (PATH or NAME=PATH, either source layout). Labels
    that are not model classes are left out; a class no source has is reported as 0 images.
    """
    if per_class < 1:
        raise MelanomaError(f"the calibration sample needs at least 1 image per class, not {per_class}")
    specs = [parse_source(text) for text in override] if override else recorded_sources(info)
    if not specs:
        raise MelanomaError("model.json records no training sources to calibrate int8 on: "
                            "give --calibration SOURCE (a folder per class, or images/ + labels.csv)")
    for spec in specs:
        if not Path(spec.path).exists():
            raise MelanomaError(f"calibration source '{spec.path}' does not exist "
                                "(give another with --calibration SOURCE)")
    listings = list_sources(specs)
    entries = [e for listing in listings for e in listing.entries if e.label in info.classes]
    if not entries:
        raise MelanomaError("the calibration source(s) have no image of the model's classes "
                            f"({', '.join(info.classes)})")
    chosen = _balanced(entries, info.classes, per_class, seed)
    images, kept, failures = decode_many([e.path for e in chosen], info.image_size)
    if not kept:
        raise MelanomaError("none of the calibration images could be read")
    used = [chosen[i] for i in kept]
    description = {
        "from": "--calibration" if override else "training.sources",
        "sources": [{"name": listing.name, "path": str(spec.path),
                     "images": sum(e.source == listing.name for e in used)}
                    for spec, listing in zip(specs, listings, strict=True)],
        "per_class": per_class,
        "class_counts": {name: sum(e.label == name for e in used) for name in info.classes},
        "images": len(used),
        "unreadable": len(failures),
        "seed": seed,
    }
    return CalibrationSample(images, description)
