"""Class rebalancing with Augmentor: new samples made from a class's own images, seeded."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from melanoma_cli.config import RebalanceConfig


def plan_rebalance(counts: dict[str, int], target: int | None) -> dict[str, int]:
    """How many new images each class needs to reach `target` (default: the largest class)."""
    goal = target if target is not None else max(counts.values(), default=0)
    return {name: max(0, goal - n) if n > 0 else 0 for name, n in counts.items()}


def build_pipeline(config: RebalanceConfig, sources: Sequence[np.ndarray]):
    """An Augmentor pipeline over `sources` with dermoscopy-safe operations (no hue shifts, no warps).

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
    return [(int(i), np.asarray(image[0], dtype=np.uint8)) for i, image in zip(indices, images, strict=True)]
