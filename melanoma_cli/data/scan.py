"""Scanning a folder-per-class tree: classes, files, validity, content hashes, duplicates."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from melanoma_cli.data.images import (
    DECODE_WORKERS,
    Unreadable,
    describe_error,
    open_image,
    to_model_input,
    to_rgb,
)
from melanoma_cli.utils.errors import MelanomaError


@dataclass(frozen=True)
class ImageFile:
    """One readable image in a class folder."""

    path: Path
    label: str
    sha256: str
    width: int
    height: int
    mode: str
    format: str
    phash: str | None = None  # 64-bit perceptual hash (hex), only when asked for


@dataclass
class DatasetScan:
    """Everything learnt from one pass over a dataset folder."""

    root: Path
    classes: list[str]
    images: list[ImageFile]
    unreadable: list[Unreadable] = field(default_factory=list)
    nested: list[Path] = field(default_factory=list)
    outside_classes: list[Path] = field(default_factory=list)
    pixels: dict[Path, np.ndarray] = field(default_factory=dict)  # model inputs, when asked for

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


def _perceptual_hash(image: Image.Image) -> str:
    """imagehash's 64-bit DCT hash of the decoded image, as 16 hex digits."""
    import imagehash

    return str(imagehash.phash(to_rgb(image)))


def _inspect_file(path: Path, label: str, perceptual_hash: bool = False,
                  image_size: int | None = None) -> tuple[ImageFile, np.ndarray | None] | Unreadable:
    """The file's facts and, with `image_size`, its model input, from one read and one decode."""
    try:
        data = path.read_bytes()
        image = open_image(data, draft_size=image_size or 256)
        width, height = image.info["original_size"]
        facts = ImageFile(
            path=path, label=label, sha256=hashlib.sha256(data).hexdigest(),
            width=width, height=height, mode=image.mode, format=image.format or "unknown",
            phash=_perceptual_hash(image) if perceptual_hash else None,
        )
        return facts, None if image_size is None else to_model_input(image, image_size)
    except Exception as exc:  # any decoder failure means "unreadable", never a crash
        return Unreadable(path, describe_error(exc))


def _check_root(root: Path) -> None:
    if not root.exists():
        what = "is a broken or looping link" if root.is_symlink() else "does not exist"
        raise MelanomaError(f"data folder '{root}' {what}")
    if not root.is_dir():
        raise MelanomaError(f"'{root}' is a file, expected a folder of class subfolders")
    if not os.access(root, os.R_OK | os.X_OK):
        raise MelanomaError(f"data folder '{root}' cannot be read (permission denied)")


def list_class_folders(root: Path) -> list[Path]:
    """The class subfolders of a dataset root, sorted by name; errors if there are none."""
    _check_root(root)
    try:
        folders = sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    except OSError as exc:
        raise MelanomaError(f"data folder '{root}' cannot be read: {exc.strerror}") from exc
    if not folders:
        raise MelanomaError(
            f"data folder '{root}' has no class subfolders (expected {root}/<class>/<image files>)"
        )
    return folders


def scan_dataset(root: Path | str, perceptual_hash: bool = False,
                 image_size: int | None = None) -> DatasetScan:
    """Read every file directly inside `root/<class>/` once: hash it and check it decodes.

    With `perceptual_hash`, each decoded image also gets a perceptual hash (near duplicates).
    With `image_size`, the scan keeps each image's model input (`to_model_input`) in `pixels`,
    so that training decodes every file once.
    """
    root = Path(root)
    folders = list_class_folders(root)
    scan = DatasetScan(root=root, classes=[f.name for f in folders], images=[])
    scan.outside_classes = sorted(
        p for p in root.iterdir() if not p.is_dir() and not p.name.startswith(".")
    )
    jobs: list[tuple[Path, str]] = []
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            scan.unreadable.append(Unreadable(folder, f"class folder cannot be read: {exc.strerror}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                scan.nested.append(entry)
            elif entry.is_file() or entry.is_symlink():  # a bad link is reported with its OS error
                jobs.append((entry, folder.name))
            else:
                scan.unreadable.append(Unreadable(entry, "not a regular file"))
    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        for result in pool.map(lambda job: _inspect_file(*job, perceptual_hash, image_size), jobs):
            if isinstance(result, Unreadable):
                scan.unreadable.append(result)
                continue
            facts, pixels = result
            scan.images.append(facts)
            if pixels is not None:
                scan.pixels[facts.path] = pixels
    return scan
