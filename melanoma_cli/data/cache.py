"""The decoded image cache of a training run (`data.cache`): every model input, uint8, once.

`ram` holds the cache in one numpy array; `disk` in a memory-mapped .npy file made in a new
temporary folder (under $TMPDIR, never in a data folder) and unlinked at once where the system
allows it: the mapping keeps the data, and the space is freed when the process lets go of it or
ends, however it ends. A pool larger than the free memory then trains, paged in and out by the
operating system. The scan
decodes each file straight into its row (no list of arrays stacked into a second copy); the
training and validation sets are rows of it (`CachedImages`), and the tf.data pipeline reads
batches by index, so no image enters a TensorFlow graph (whose constants stop at 2 GB).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

CacheKind = Literal["ram", "disk"]
CACHE_FILE = "images.npy"


class ImageCache:
    """`count` rows of `size` x `size` x 3 uint8 images, in RAM or memory-mapped on disk."""

    def __init__(self, count: int, size: int, kind: CacheKind = "ram") -> None:
        self.kind = kind
        self.array = self._allocate((count, size, size, 3))

    def _allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        """A new uint8 array of `shape`: in RAM, or mapped from a new temporary file."""
        if self.kind == "ram":
            return np.empty(shape, np.uint8)  # pages are only committed when written
        folder = Path(tempfile.mkdtemp(prefix="melanoma-cache-"))
        array = np.lib.format.open_memmap(folder / CACHE_FILE, mode="w+", dtype=np.uint8, shape=shape)
        try:  # the mapping keeps the data; the name is not needed any more
            shutil.rmtree(folder)
        except OSError:  # a system that cannot remove a mapped file: remove it with the array
            weakref.finalize(array, shutil.rmtree, folder, ignore_errors=True)
        return array

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
