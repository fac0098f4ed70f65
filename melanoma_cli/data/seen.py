"""The fingerprints of the images a model has seen (trained, validated or adapted on).

Stored beside the model (`seen_images.npz`: content hashes, ISIC ids, 64-bit perceptual hashes; no
pixels), so that a sample meant to judge or adapt the model can be checked for copies of them
without the training data at hand.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma_cli.data.dedupe import hamming_blocks, isic_id
from melanoma_cli.data.scan import ImageFile
from melanoma_cli.utils.atomic import write_with
from melanoma_cli.utils.errors import MelanomaError, first_line

# perceptual-hash bits within which a picture counts as seen (no thumbnail is kept to confirm it,
# so this is stricter than de-duplication's default)
SEEN_DISTANCE = 2


@dataclass(frozen=True)
class SeenImages:
    """Content hashes, ISIC ids and perceptual hashes of the images a model has seen."""

    sha256: np.ndarray  # (n,) str
    ids: np.ndarray  # (k,) str
    phash: np.ndarray  # (m,) uint64

    @classmethod
    def of(cls, images: Sequence[ImageFile]) -> SeenImages:
        return cls(np.array(sorted({i.sha256 for i in images}), dtype=str),
                   np.array(sorted({i for i in map(isic_id, images) if i}), dtype=str),
                   np.array(sorted({int(i.phash, 16) for i in images if i.phash}), dtype=np.uint64))

    def plus(self, other: SeenImages) -> SeenImages:
        return SeenImages(np.union1d(self.sha256, other.sha256), np.union1d(self.ids, other.ids),
                          np.union1d(self.phash, other.phash))

    def save(self, path: Path) -> None:
        write_with(path, lambda tmp: np.savez_compressed(tmp, sha256=self.sha256, ids=self.ids,
                                                         phash=self.phash))

    @classmethod
    def load(cls, path: Path) -> SeenImages:
        try:
            with np.load(path) as arrays:
                return cls(arrays["sha256"], arrays["ids"], arrays["phash"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise MelanomaError(f"seen-images file '{path}' cannot be read ({first_line(exc)})") from exc

    def copies(self, images: Sequence[ImageFile]) -> list[ImageFile]:
        """The images that are the same file, the same ISIC image or the same picture as a seen one."""
        hit = {n for n, image in enumerate(images)
               if image.sha256 in set(self.sha256.tolist()) or isic_id(image) in set(self.ids.tolist())}
        positions = [n for n, image in enumerate(images) if image.phash]
        hashes = np.array([int(images[n].phash, 16) for n in positions], dtype=np.uint64)
        if len(hashes) and len(self.phash):
            for rows, _, _ in hamming_blocks(hashes, self.phash, SEEN_DISTANCE):
                hit.update(positions[r] for r in rows.tolist())
        return [images[n] for n in sorted(hit)]
