"""Reading the files of one or more sources once: validity, content hash, perceptual hash."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from melanoma_cli.config import SourceConfig
from melanoma_cli.data.cache import CacheKind, ImageCache
from melanoma_cli.data.images import (
    DECODE_ERRORS,
    DECODE_WORKERS,
    Unreadable,
    describe_error,
    open_image,
    to_model_input,
    to_rgb,
)
from melanoma_cli.data.sources import (
    Entry,
    SourceListing,
    list_class_folders,
    list_folder_source,
    list_sources,
)


@dataclass(frozen=True)
class ImageFile:
    """One readable, labelled image."""

    path: Path
    label: str
    sha256: str
    width: int
    height: int
    mode: str
    format: str
    phash: str | None = None  # 64-bit perceptual hash (hex), only when asked for
    thumbnail: bytes | None = field(default=None, repr=False)  # 16x16 RGB, with the phash
    source: str = ""  # name of the source it came from
    group: str | None = None  # lesion id from the source (images of one lesion share it)


@dataclass
class DatasetScan:
    """Everything learnt from one pass over the files of one or more sources."""

    root: Path  # the (first) source's folder, for messages
    classes: list[str]
    images: list[ImageFile]
    unreadable: list[Unreadable] = field(default_factory=list)
    nested: list[Path] = field(default_factory=list)
    outside_classes: list[Path] = field(default_factory=list)
    sources: list[SourceListing] = field(default_factory=list)
    unreadable_by_class: Counter = field(default_factory=Counter)

    cache: ImageCache | None = None  # model inputs, when asked for: row `rows[path]` of each file
    rows: dict[Path, int] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """How messages name the data: its folder, or its sources."""
        if len(self.sources) > 1:
            return "sources " + ", ".join(f"'{s.name}'" for s in self.sources)
        return f"'{self.root}'"

    def counts(self) -> dict[str, int]:
        """Readable images per class, in class order."""
        counts = dict.fromkeys(self.classes, 0)
        for image in self.images:
            counts[image.label] += 1
        return counts

    def hash_groups(self) -> list[list[ImageFile]]:
        """Groups of two or more files with identical bytes, sorted by first path."""
        by_hash: dict[str, list[ImageFile]] = defaultdict(list)
        for image in self.images:
            by_hash[image.sha256].append(image)
        return sorted((g for g in by_hash.values() if len(g) > 1), key=lambda g: str(g[0].path))

    def duplicate_groups(self) -> list[list[ImageFile]]:
        """Identical files filed under one class."""
        return [g for g in self.hash_groups() if len({i.label for i in g}) == 1]

    def conflict_groups(self) -> list[list[ImageFile]]:
        """Identical files filed under different classes (label conflicts)."""
        return [g for g in self.hash_groups() if len({i.label for i in g}) > 1]


THUMBNAIL_SIZE = 16


def perceptual_hash(image: Image.Image) -> str:
    """imagehash's 64-bit DCT hash of the decoded image, as 16 hex digits."""
    import imagehash

    return str(imagehash.phash(to_rgb(image)))


def thumbnail(image: Image.Image) -> bytes:
    """The image averaged down to 16x16 RGB: confirms that two similar hashes are one picture."""
    small = to_rgb(image).resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BOX)
    return small.tobytes()


def _inspect_file(entry: Entry, with_phash: bool, image_size: int | None = None,
                  store: Callable[[np.ndarray], None] | None = None) -> ImageFile | Unreadable:
    """The file's facts from one read and one decode (JPEGs at `image_size`'s scale, as training
    decodes them, so that perceptual hashes are training's); with `store`, its model input is
    handed to it."""
    try:
        data = entry.path.read_bytes()
        image = open_image(data, draft_size=image_size or 256)
        width, height = image.info["original_size"]
        facts = ImageFile(
            path=entry.path, label=entry.label, sha256=hashlib.sha256(data).hexdigest(),
            width=width, height=height, mode=image.mode, format=image.format or "unknown",
            phash=perceptual_hash(image) if with_phash else None,
            thumbnail=thumbnail(image) if with_phash else None,
            source=entry.source, group=entry.group,
        )
        pixels = None if image_size is None or store is None else to_model_input(image, image_size)
    except DECODE_ERRORS as exc:  # a file that is not a usable image; a bug still raises
        return Unreadable(entry.path, describe_error(exc))
    if pixels is not None and store is not None:
        store(pixels)  # outside the try: a failing cache (a full disk) is not an unreadable file
    return facts


def _read(listings: list[SourceListing], with_phash: bool, image_size: int | None = None,
          cache: CacheKind = "ram", keep_pixels: bool = True) -> DatasetScan:
    """Read every listed file once, in parallel; classes are the labels met (sorted).

    With `image_size`, each decoding thread writes the image's model input (`to_model_input`)
    straight into its row of an `ImageCache` of kind `cache` (`scan.cache`, `scan.rows`), so that
    training decodes every file once and never holds a second copy; `keep_pixels=False` keeps
    none (JPEGs are still decoded at training's scale).
    """
    classes = {e.label for listing in listings for e in listing.entries}
    for listing in listings:
        if listing.kind == "folders":  # an empty class folder is still a class (and an error later)
            classes.update(p.name for p in list_class_folders(listing.root))
    scan = DatasetScan(root=listings[0].root, classes=sorted(classes), images=[], sources=listings)
    entries = [e for listing in listings for e in listing.entries]
    label_of = {e.path: e.label for e in entries}
    for listing in listings:
        scan.unreadable.extend(listing.unreadable)
        scan.nested.extend(listing.nested)
        scan.outside_classes.extend(listing.loose)
    if image_size is not None and keep_pixels:
        scan.cache = ImageCache(len(entries), image_size, cache)

    def inspect(row: int) -> ImageFile | Unreadable:
        def store(pixels: np.ndarray) -> None:
            scan.cache.array[row] = pixels

        return _inspect_file(entries[row], with_phash, image_size, store if scan.cache is not None else None)

    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        for row, result in enumerate(pool.map(inspect, range(len(entries)))):
            if isinstance(result, Unreadable):
                scan.unreadable.append(result)
                scan.unreadable_by_class[label_of[result.path]] += 1
                continue
            scan.images.append(result)
            if scan.cache is not None:
                scan.rows[result.path] = row
    return scan


def scan_dataset(root: Path | str, perceptual_hash: bool = False,
                 image_size: int | None = None) -> DatasetScan:
    """Read every file directly inside `root/<class>/` once: hash it and check it decodes.

    With `perceptual_hash`, each decoded image also gets a perceptual hash (near duplicates);
    with `image_size`, its model input (see `_read`).
    """
    root = Path(root)
    return _read([list_folder_source(root, root.absolute().name)], perceptual_hash, image_size)


def fingerprint_files(paths: list[Path]) -> tuple[list[ImageFile], list[Unreadable]]:
    """Hashes (content and perceptual) of image files of any layout, e.g. a holdout folder."""
    images: list[ImageFile] = []
    unreadable: list[Unreadable] = []
    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        for result in pool.map(lambda path: _inspect_file(Entry(path, "", ""), True), paths):
            if isinstance(result, Unreadable):
                unreadable.append(result)
            else:
                images.append(result)
    return images, unreadable


def scan_sources(specs: list[SourceConfig], classes: list[str] | None = None,
                 perceptual_hash: bool = True, image_size: int | None = None,
                 cache: CacheKind = "ram", keep_pixels: bool = True) -> DatasetScan:
    """Read the files of several sources of either format into one scan (see `_read`)."""
    return _read(list_sources(specs, classes), perceptual_hash, image_size, cache, keep_pixels)
