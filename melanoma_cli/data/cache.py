"""The decoded image cache of a training run (`data.cache`): every model input, uint8, once.

`ram` holds the cache in one numpy array; `disk` in a memory-mapped temporary file (under
$TMPDIR, never in a data folder) that has no name: the mapping keeps the data, and the space is
freed when the process lets go of it or ends, however it ends. Its space is reserved up front,
so a full disk is a clear error, not a crash while writing. A pool larger than the free memory
then trains, paged in and out by the operating system. The scan
decodes each file straight into its row (no list of arrays stacked into a second copy); the
training and validation sets are rows of it (`CachedImages`), and the tf.data pipeline reads
batches by index, so no image enters a TensorFlow graph (whose constants stop at 2 GB).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from typing import Literal

import numpy as np

from melanoma_cli.utils.errors import MelanomaError

CacheKind = Literal["ram", "disk"]


class ImageCache:
    """`count` rows of `size` x `size` x 3 uint8 images, in RAM or memory-mapped on disk."""

    def __init__(self, count: int, size: int, kind: CacheKind = "ram") -> None:
        self.kind = kind
        self.array = self._allocate((count, size, size, 3))

    def _allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        """A new uint8 array of `shape`: in RAM, or mapped from a new temporary file."""
        size = math.prod(shape)
        if self.kind == "ram" or size == 0:
            return np.empty(shape, np.uint8)  # pages are only committed when written
        with tempfile.TemporaryFile(prefix="melanoma-cache-") as handle:  # nameless on POSIX
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(handle.fileno(), 0, size)
                else:
                    handle.truncate(size)
            except OSError as exc:
                raise MelanomaError(
                    f"no room for the image cache ({size / 1e9:.1f} GB) in temporary folder "
                    f"'{tempfile.gettempdir()}' ({exc.strerror}); free space there, point TMPDIR "
                    "elsewhere, or set config key 'data.cache' to ram") from exc
            return np.memmap(handle, dtype=np.uint8, mode="r+", shape=shape)  # outlives the handle

    def __len__(self) -> int:
        return len(self.array)

    def extend(self, images: np.ndarray) -> np.ndarray:
        """Append `images` (n x size x size x 3) and return their rows."""
        old = self.array
        self.array = self._allocate((len(old) + len(images), *old.shape[1:]))
        self.array[:len(old)] = old
        self.array[len(old):] = images
        return np.arange(len(old), len(self.array))


class CachedImages:
    """Some rows of an `ImageCache`, in order: indexes and iterates like a uint8 image array."""

    def __init__(self, cache: ImageCache, rows: np.ndarray) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.cache.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.cache.array.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        """The image (int) or images (slice, index array or mask) as an in-memory array."""
        return np.asarray(self.cache.array[self.rows[key]])

    def __iter__(self) -> Iterator[np.ndarray]:
        for row in self.rows:
            yield np.asarray(self.cache.array[row])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        images = self[:]
        return images if dtype is None else images.astype(dtype)
