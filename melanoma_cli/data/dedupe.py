"""One image, one copy, one label: duplicates across sources, label conflicts, lesion groups.

Two files show the same picture when they have the same bytes, the same ISIC archive id in
their file names, or perceptual hashes within a small Hamming distance AND 16x16 thumbnails
that differ by at most a few grey levels (the same picture at another size or compression;
on dermoscopy a hash alone also matches different lesions that merely look alike).

Copies of one picture form a cluster: one copy is kept (a trusted source's, since a trusted
source is the original that others copied, resized or re-encoded; else the largest, then the
first source listed), and a cluster whose copies disagree on the label is a conflict, dropped
unless a trusted source settles it (the first of `trust_sources` that has a copy). Pictures that share
a lesion (the source's `group`) or a cluster form a unit, which a split never cuts.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from melanoma_cli.data.scan import THUMBNAIL_SIZE, ImageFile

ISIC_ID = re.compile(r"^ISIC_\d{7}", re.IGNORECASE)
THUMBNAIL_VALUES = THUMBNAIL_SIZE * THUMBNAIL_SIZE * 3
THUMBNAIL_TOLERANCE = 4.0  # mean absolute difference (0-255) of two copies' 16x16 thumbnails
COUNT_KEYS = ("images", "kept", "duplicates", "conflicts", "holdout")


def _equal_pairs(keys: Sequence[object | None]) -> Iterator[tuple[int, int]]:
    """(first index with the key, index) for every later item with an equal key (None joins nothing)."""
    first: dict[object, int] = {}
    for index, key in enumerate(keys):
        if key is not None and first.setdefault(key, index) != index:
            yield first[key], index


def _components(size: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """The connected component of each of `size` items joined by `pairs`, numbered from 0 in the
    order of each component's first item."""
    edges = np.array(list(pairs), dtype=np.int64).reshape(-1, 2)
    graph = coo_array((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(size, size))
    return connected_components(graph, directed=False)[1]


def isic_id(image: ImageFile) -> str | None:
    """The ISIC archive id a file name starts with (ISIC_0024306), if any."""
    match = ISIC_ID.match(image.path.stem)
    return match.group(0).upper() if match else None


def hamming_blocks(left: np.ndarray, right: np.ndarray, max_distance: int,
                   block: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, cols, distances) of 64-bit hashes within `max_distance` bits, a block of rows at a time."""
    for start in range(0, len(left), block):
        distance = np.bitwise_count(left[start:start + block, None] ^ right[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        yield rows + start, cols, distance[rows, cols]


@dataclass
class Fingerprints:
    """Perceptual hashes and thumbnails of the images that have them, by position."""

    positions: list[int]
    hashes: np.ndarray  # uint64
    thumbnails: np.ndarray  # (n, 768) float32

    @classmethod
    def of(cls, images: Sequence[ImageFile]) -> Fingerprints:
        positions = [n for n, image in enumerate(images) if image.phash and image.thumbnail]
        hashes = np.array([int(images[n].phash, 16) for n in positions], dtype=np.uint64)
        thumbs = [np.frombuffer(images[n].thumbnail, np.uint8) for n in positions]
        return cls(positions, hashes, np.array(thumbs, np.float32).reshape(len(positions), THUMBNAIL_VALUES))

    def same_pictures(self, other: Fingerprints, max_distance: int) -> Iterator[tuple[int, int]]:
        """(position here, position there) of every pair that shows the same picture."""
        for rows, cols, _ in hamming_blocks(self.hashes, other.hashes, max_distance):
            close = np.abs(self.thumbnails[rows] - other.thumbnails[cols]).mean(axis=1)
            for i, j in zip(rows[close <= THUMBNAIL_TOLERANCE].tolist(),
                            cols[close <= THUMBNAIL_TOLERANCE].tolist(), strict=True):
                yield self.positions[i], other.positions[j]


@dataclass
class HoldoutIndex:
    """What identifies a held-out image: content hash, ISIC id, perceptual hash."""

    sha256: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    fingerprints: Fingerprints | None = None

    @classmethod
    def of(cls, images: Sequence[ImageFile]) -> HoldoutIndex:
        return cls({i.sha256 for i in images}, {i for i in map(isic_id, images) if i},
                   Fingerprints.of(images))

    def matches(self, images: Sequence[ImageFile], fingerprints: Fingerprints,
                max_distance: int | None) -> set[int]:
        """Indices of `images` (whose `fingerprints` are given) that are copies of a held-out image."""
        hit = {n for n, image in enumerate(images)
               if image.sha256 in self.sha256 or isic_id(image) in self.ids}
        if max_distance is not None and self.fingerprints is not None:
            pairs = fingerprints.same_pictures(self.fingerprints, max_distance)
            hit.update(n for n, _ in pairs)
        return hit


@dataclass
class Cleaned:
    """Units of kept images (a unit never straddles a split) and the account of what went."""

    units: list[list[ImageFile]]
    counts: dict[str, dict[str, int]]  # per source: images, kept, duplicates, conflicts, holdout
    conflicts: list[list[ImageFile]]  # clusters whose copies disagree on the label
    resolved: int = 0  # conflicts settled by the trusted source
    dropped_by_class: Counter = field(default_factory=Counter)  # copies left out, by their label

    def totals(self) -> dict[str, int]:
        """Counts summed over sources."""
        return {key: sum(c[key] for c in self.counts.values()) for key in COUNT_KEYS}


def _copy_pairs(images: Sequence[ImageFile], fingerprints: Fingerprints,
                max_distance: int | None) -> list[tuple[int, int]]:
    """Pairs of positions that are copies of one picture: same bytes, same ISIC id, near-identical
    perceptual hash."""
    pairs = [*_equal_pairs([i.sha256 for i in images]), *_equal_pairs([isic_id(i) for i in images])]
    if max_distance is not None:
        pairs.extend(fingerprints.same_pictures(fingerprints, max_distance))
    return pairs


def _members(labels: np.ndarray) -> list[list[int]]:
    """The positions of each component, components in label order."""
    groups: list[list[int]] = [[] for _ in range(int(labels.max(initial=-1)) + 1)]
    for position, label in enumerate(labels.tolist()):
        groups[label].append(position)
    return groups


def _keep_order(source_order: dict[str, int], trust_sources: Sequence[str]):
    """Sort key: the copy to keep comes first (a trusted source's, in the order trusted; then
    the largest, the first source, the path)."""
    trust = {name: n for n, name in enumerate(trust_sources)}
    return lambda i: (trust.get(i.source, len(trust)), -i.width * i.height,
                      source_order.get(i.source, 0), str(i.path))


def clean_images(
    images: Sequence[ImageFile],
    *,
    drop_conflicts: bool = True,
    trust_sources: Sequence[str] = (),
    max_distance: int | None = None,
    holdout: HoldoutIndex | None = None,
) -> Cleaned:
    """One copy per picture, conflicts dropped or settled, held-out pictures removed."""
    sources = list(dict.fromkeys(i.source for i in images))
    order = _keep_order({name: n for n, name in enumerate(sources)}, trust_sources)
    counts = {name: dict.fromkeys(COUNT_KEYS, 0) for name in sources}
    for image in images:
        counts[image.source]["images"] += 1
    fingerprints = Fingerprints.of(images)
    copies_of = _copy_pairs(images, fingerprints, max_distance)
    clusters = _components(len(images), copies_of)
    held = holdout.matches(images, fingerprints, max_distance) if holdout else set()
    lesion_pairs = _equal_pairs([(i.source, i.group) if i.group else None for i in images])
    unit_of = _components(len(images), [*copies_of, *lesion_pairs])  # whole clusters, whole lesions
    kept: list[tuple[int, ImageFile]] = []  # (position, the copy kept, possibly relabelled)
    conflicts: list[list[ImageFile]] = []
    resolved = 0
    dropped: Counter = Counter()
    for members in _members(clusters):
        copies = sorted((images[n] for n in members), key=order)
        if any(n in held for n in members):
            for image in copies:
                counts[image.source]["holdout"] += 1
                dropped[image.label] += 1
            continue
        chosen = copies[:1]
        if len({i.label for i in copies}) > 1:
            conflicts.append(copies)
            trusted = _trusted_label(copies, trust_sources)
            if trusted is not None:
                chosen = [dataclasses.replace(copies[0], label=trusted)]
                resolved += 1
            elif drop_conflicts:
                for image in copies:
                    counts[image.source]["conflicts"] += 1
                    dropped[image.label] += 1
                continue
            else:  # keep one copy per label, on one side of the split
                chosen = list({i.label: i for i in reversed(copies)}.values())
        for image in copies:
            if image.path not in {c.path for c in chosen}:
                counts[image.source]["duplicates"] += 1
                dropped[image.label] += 1
        for image in chosen:
            counts[image.source]["kept"] += 1
        position = {images[n].path: n for n in members}
        kept.extend((position[c.path], c) for c in chosen)
    units: dict[int, list[ImageFile]] = defaultdict(list)
    for n, image in kept:
        units[int(unit_of[n])].append(image)
    ordered = sorted((sorted(u, key=lambda i: str(i.path)) for u in units.values()),
                     key=lambda u: str(u[0].path))
    return Cleaned(ordered, counts, conflicts, resolved, dropped)


def _trusted_label(copies: Sequence[ImageFile], trust_sources: Sequence[str]) -> str | None:
    """The label of the first trusted source that has a copy (None if none, or if it disagrees)."""
    for source in trust_sources:
        labels = {i.label for i in copies if i.source == source}
        if labels:
            return labels.pop() if len(labels) == 1 else None
    return None


def unit_label(unit: Sequence[ImageFile]) -> str:
    """The label a unit is stratified by: its most common one."""
    return Counter(i.label for i in unit).most_common(1)[0][0]
