"""Predicting image files: expanding inputs, streaming them through a classifier batch by batch."""

from __future__ import annotations

import csv
import dataclasses
import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.data.images import IMAGE_SUFFIXES, Unreadable, decode_many, iter_image_files
from melanoma_cli.runtime.classifier import Classifier
from melanoma_cli.stats.metrics import melanoma_flags
from melanoma_cli.utils.atomic import write_with
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.progress import Progress, no_progress

GLOB_CHARACTERS = frozenset("*?[")
CLASSIFIED, UNREADABLE = "classified", "unreadable"  # the status of each input's row


@dataclass(frozen=True)
class Batch:
    """One batch of a run: positions (in the input list) of the readable files, their
    probabilities (rows in the same order), and the files that could not be read."""

    indices: list[int]
    probabilities: np.ndarray
    unreadable: list[Unreadable]
    grayscale: list[int]  # positions of the readable images without colour (all channels equal)


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image."""

    path: Path
    probabilities: dict[str, float]
    top_k: list[tuple[str, float]]
    melanoma_probability: float | None
    melanoma_flag: bool | None
    grayscale: bool = False  # the image has no colour (the model was trained on colour images)

    @property
    def prediction(self) -> str:
        """The most probable class."""
        return self.top_k[0][0]

    @property
    def probability(self) -> float:
        """The probability of the most probable class."""
        return self.top_k[0][1]

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of `melanoma predict --json`."""
        return {
            "path": str(self.path),
            "status": CLASSIFIED,
            "reason": None,
            "prediction": self.prediction,
            "probability": self.probability,
            "top_k": [[name, p] for name, p in self.top_k],
            "probabilities": self.probabilities,
            "melanoma_probability": self.melanoma_probability,
            "melanoma_flag": self.melanoma_flag,
        }


def unreadable_record(item: Unreadable) -> dict[str, Any]:
    """The JSON record of a file that could not be classified: the keys of a prediction's, empty."""
    return {"path": str(item.path), "status": UNREADABLE, "reason": item.reason, "prediction": None,
            "probability": None, "top_k": [], "probabilities": {}, "melanoma_probability": None,
            "melanoma_flag": None}


def _glob_matches(pattern: str) -> list[Path]:
    matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
    if not matches:
        raise MelanomaError(f"no files match '{pattern}'")
    # Like a folder listing, a pattern selects image files; a file named outright is always tried.
    return [m for m in matches if m.is_dir() or m.suffix.lower() in IMAGE_SUFFIXES]


def expand_inputs(inputs: Iterable[Path | str]) -> list[Path]:
    """Files as named, folders searched recursively for images, globs expanded (no duplicates)."""
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if os.path.lexists(path):  # a broken or looping link is tried, and reported as unreadable
            candidates = [path]
        elif GLOB_CHARACTERS & set(str(item)):
            candidates = _glob_matches(str(item))
        else:
            raise MelanomaError(f"input '{item}' does not exist")
        found.update(dict.fromkeys(iter_image_files(candidates)))
    if not found:
        raise MelanomaError("no image files found in the given inputs")
    return list(found)


def resolve_threshold(classifier: Classifier, threshold: float | None) -> float | None:
    """The melanoma threshold to use: the one given, else the model's (None means argmax)."""
    return classifier.melanoma_threshold if threshold is None else threshold


def classify_batches(classifier: Classifier, paths: Sequence[Path], batch_size: int = 64,
                     progress: Progress = no_progress) -> Iterator[Batch]:
    """Decode and classify `paths` one batch at a time (memory bounded by the batch size)."""
    progress("start", {"total": len(paths)})
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images, kept, unreadable = decode_many(chunk, classifier.image_size)
        probabilities = classifier.predict(images)
        progress("batch", {"images": len(chunk)})
        gray = (images == images[..., :1]).all(axis=(1, 2, 3))
        yield Batch([start + i for i in kept], probabilities, unreadable,
                    [start + i for i, no_colour in zip(kept, gray, strict=True) if no_colour])


def _prediction(path: Path, probabilities: np.ndarray, classes: list[str], top_k: int,
                melanoma: int | None, flag: bool | None) -> Prediction:
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    return Prediction(
        path=path,
        probabilities={name: float(p) for name, p in zip(classes, probabilities, strict=True)},
        top_k=[(classes[k], float(probabilities[k])) for k in order],
        melanoma_probability=None if melanoma is None else float(probabilities[melanoma]),
        melanoma_flag=flag,
    )


def to_predictions(classifier: Classifier, paths: Sequence[Path], probabilities: np.ndarray,
                   top_k: int = 3, threshold: float | None = None) -> list[Prediction]:
    """One `Prediction` per row of `probabilities` (rows in the order of `paths`).

    A lesion is flagged when p(melanoma) >= threshold (given, else the model's; argmax if neither).
    """
    classes = classifier.classes
    melanoma = classes.index(classifier.melanoma_class) if classifier.melanoma_class else None
    flags = (None if melanoma is None
             else melanoma_flags(probabilities, melanoma, resolve_threshold(classifier, threshold)).tolist())
    return [_prediction(path, probabilities[row], classes, top_k, melanoma,
                        None if flags is None else flags[row])
            for row, path in enumerate(paths)]


def predict_files(
    classifier: Classifier,
    paths: Sequence[Path],
    batch_size: int = 64,
    top_k: int = 3,
    threshold: float | None = None,
    progress: Progress = no_progress,
) -> Iterator[Prediction | Unreadable]:
    """One prediction, or the reason the file could not be read, per path in the order of `paths`,
    yielded batch by batch (see `to_predictions` for the melanoma flag)."""
    start = 0
    for batch in classify_batches(classifier, paths, batch_size, progress):
        size = len(batch.indices) + len(batch.unreadable)
        failed = sorted(set(range(start, start + size)) - set(batch.indices))  # in input order
        items: dict[int, Prediction | Unreadable] = dict(zip(failed, batch.unreadable, strict=True))
        items.update(zip(batch.indices, to_predictions(
            classifier, [paths[i] for i in batch.indices], batch.probabilities, top_k, threshold),
            strict=True))
        for i in batch.grayscale:
            items[i] = dataclasses.replace(items[i], grayscale=True)
        yield from (items[i] for i in sorted(items))
        start += size


def check_csv_destination(path: Path) -> None:
    """Refuse a CSV destination that cannot be written, before any work is done."""
    folder = path.parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise MelanomaError(f"CSV file '{path}' cannot be written "
                            f"(is it a folder, or is '{folder}' missing or read-only?)")


def write_csv(items: Sequence[Prediction | Unreadable], classes: list[str], path: Path) -> None:
    """One row per input: path, status and why it was not classified, prediction, its
    probability, melanoma columns, all probabilities (empty for an unreadable file)."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", "status", "reason", "prediction", "probability",
                             "melanoma_probability", "melanoma_flag", *classes])
            for item in items:
                if isinstance(item, Unreadable):
                    writer.writerow([item.path, UNREADABLE, item.reason, *[""] * (4 + len(classes))])
                    continue
                melanoma = item.melanoma_probability
                writer.writerow([item.path, CLASSIFIED, "", item.prediction, f"{item.probability:.6f}",
                                 "" if melanoma is None else f"{melanoma:.6f}",
                                 "" if item.melanoma_flag is None else item.melanoma_flag,
                                 *(f"{item.probabilities[name]:.6f}" for name in classes)])

    try:
        write_with(path, write)
    except OSError as exc:
        raise MelanomaError(f"CSV file '{path}' cannot be written: {exc.strerror or exc}") from exc
