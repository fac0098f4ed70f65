"""Test-time augmentation: average a classifier's probabilities over the 8 symmetries of the square.

A dermoscopic image has no preferred orientation, so the four 90-degree rotations of the image and
of its mirror image (the dihedral group D4) are equally valid views. `TTAClassifier` wraps any
engine and implements `Classifier`, so every command gets the same averaging.

Averaging the views pulls probabilities towards the middle, so a melanoma threshold set on
single-view probabilities would not reach its sensitivity: TTA flags with the model's own TTA
threshold (model.json `melanoma_threshold_tta`, set on validation at the end of training), and
is refused for a model that has a threshold but no TTA threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma_cli.runtime.classifier import Classifier
from melanoma_cli.runtime.names import EngineName
from melanoma_cli.utils.errors import MelanomaError

VIEW_COUNT = 8


def view(images: np.ndarray, index: int) -> np.ndarray:
    """View `index` (0..7) of a batch (n, h, w, ...): rotated index % 4 quarter turns, then
    mirrored left-right when index >= 4. View 0 is the batch itself."""
    turned = np.rot90(images, index % 4, axes=(1, 2))
    return turned[:, :, ::-1] if index >= 4 else turned


def unview(maps: np.ndarray, index: int) -> np.ndarray:
    """Undo `view(..., index)` on a batch of maps (n, h, w, ...): back to the original orientation."""
    mirrored = maps[:, :, ::-1] if index >= 4 else maps
    return np.rot90(mirrored, -(index % 4), axes=(1, 2))


def all_views(images: np.ndarray) -> np.ndarray:
    """The 8 views of each image, view-major: rows [v * n + i] hold view v of image i."""
    return np.concatenate([view(images, index) for index in range(VIEW_COUNT)])


def average_views(rows: np.ndarray) -> np.ndarray:
    """The per-image mean of view-major rows (8 * n, ...) as made by `all_views`."""
    return rows.reshape(VIEW_COUNT, -1, *rows.shape[1:]).mean(axis=0)


@dataclass
class TTAClassifier:
    """Any classifier, with its probabilities averaged over the 8 views of each image, flagging
    melanoma at the inner classifier's TTA threshold."""

    inner: Classifier

    @property
    def classes(self) -> list[str]:
        return self.inner.classes

    @property
    def image_size(self) -> int:
        return self.inner.image_size

    @property
    def melanoma_class(self) -> str | None:
        return self.inner.melanoma_class

    @property
    def melanoma_threshold(self) -> float | None:
        return self.inner.melanoma_threshold_tta

    @property
    def melanoma_threshold_tta(self) -> float | None:
        return self.inner.melanoma_threshold_tta

    @property
    def source(self) -> Path:
        return self.inner.source

    @property
    def engine(self) -> EngineName:
        return self.inner.engine

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Mean class probabilities over the 8 views (one engine call per view keeps memory flat)."""
        if len(images) == 0:
            return self.inner.predict(images)
        views = [self.inner.predict(np.ascontiguousarray(view(images, index)))
                 for index in range(VIEW_COUNT)]
        return np.mean(views, axis=0, dtype=np.float64).astype(np.float32)


def uses_tta(classifier: Classifier) -> bool:
    """Whether `classifier` averages over the 8 views."""
    return isinstance(classifier, TTAClassifier)


def with_tta(classifier: Classifier, tta: bool) -> Classifier:
    """`classifier` wrapped in `TTAClassifier` when `tta` is set, else itself.

    Refused when the model has a melanoma threshold but none set with TTA (its flags would
    not mean what the threshold promises)."""
    if not tta:
        return classifier
    if classifier.melanoma_threshold is not None and classifier.melanoma_threshold_tta is None:
        raise MelanomaError(f"--tta needs a melanoma threshold set with test-time augmentation, and "
                            f"the model '{classifier.source}' has none ('melanoma_threshold_tta' in "
                            "its model.json; training sets it): leave out --tta")
    return TTAClassifier(classifier)
