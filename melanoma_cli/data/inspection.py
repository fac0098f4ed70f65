"""A dataset health report: class balance, unreadable files, duplicates, conflicts, leakage.

Everything comes from one read of each file (data.scan); nothing here prints.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.data.dedupe import clean_images, hamming_blocks
from melanoma_cli.data.images import Unreadable
from melanoma_cli.data.scan import DatasetScan, ImageFile, scan_dataset, scan_sources
from melanoma_cli.data.sources import parse_source
from melanoma_cli.utils.errors import MelanomaError

MAX_HAMMING = 64  # bits in a perceptual hash


def _paths(files: Iterable[ImageFile]) -> list[str]:
    return [str(f.path) for f in files]


def _unreadable(items: Iterable[Unreadable]) -> list[dict[str, str]]:
    return [{"path": str(u.path), "reason": u.reason} for u in sorted(items, key=lambda u: u.path)]


def _balance(counts: dict[str, int]) -> dict[str, Any]:
    total = sum(counts.values())
    values = list(counts.values())
    smallest = min(values, default=0)
    return {
        "classes": counts,
        "share": {name: round(n / total, 4) if total else 0.0 for name, n in counts.items()},
        "total": total,
        "imbalance_ratio": round(max(values) / smallest, 3) if smallest else None,
    }


def _image_summary(images: list[ImageFile]) -> dict[str, Any]:
    sizes = Counter(f"{f.width}x{f.height}" for f in images)
    widths, heights = [f.width for f in images], [f.height for f in images]
    return {
        "sizes": {
            "distinct": len(sizes),
            "most_common": [{"size": s, "count": n} for s, n in sizes.most_common(5)],
            "min_width": min(widths, default=None), "max_width": max(widths, default=None),
            "min_height": min(heights, default=None), "max_height": max(heights, default=None),
        },
        "modes": dict(Counter(f.mode for f in images).most_common()),
        "formats": dict(Counter(f.format for f in images).most_common()),
    }


def _layout_problems(scan: DatasetScan) -> dict[str, Any]:
    """Folders below class folders (a recursive loader would sweep them in) and stray files."""
    nested = [
        {"path": str(folder), "files": sorted(str(p) for p in folder.rglob("*") if p.is_file())}
        for folder in scan.nested
    ]
    return {"nested": nested, "outside_classes": [str(p) for p in scan.outside_classes]}


def _conflicts_by_classes(groups: list[list[ImageFile]]) -> dict[str, int]:
    pairs = Counter(" / ".join(sorted({f.label for f in group})) for group in groups)
    return dict(sorted(pairs.items()))


def _test_overlap(train: DatasetScan, test: DatasetScan) -> list[dict[str, Any]]:
    """Every test file whose exact content is also in the training folder."""
    by_hash: dict[str, list[ImageFile]] = defaultdict(list)
    for image in train.images:
        by_hash[image.sha256].append(image)
    overlap = []
    for image in sorted(test.images, key=lambda f: f.path):
        matches = sorted(by_hash.get(image.sha256, []), key=lambda f: f.path)
        if matches:
            overlap.append({
                "test_path": str(image.path),
                "train_paths": _paths(matches),
                "test_class": image.label,
                "train_classes": sorted({f.label for f in matches}),
            })
    return overlap


def _hash_array(images: list[ImageFile]) -> np.ndarray:
    return np.array([int(f.phash, 16) for f in images], dtype=np.uint64)


def hamming_pairs(
    left: np.ndarray, right: np.ndarray, threshold: int, same: bool
) -> list[tuple[int, int, int]]:
    """(i, j, distance) for 64-bit hashes within `threshold` bits; `same`: left is right, i < j."""
    return [(i, j, d) for rows, cols, distances in hamming_blocks(left, right, threshold)
            for i, j, d in zip(rows.tolist(), cols.tolist(), distances.tolist(), strict=True)
            if not same or i < j]


def _near_duplicates(images: list[ImageFile], threshold: int) -> list[dict[str, Any]]:
    """Pairs of different files that look alike (not byte-identical), closest first."""
    hashes = _hash_array(images)
    pairs = []
    for i, j, distance in hamming_pairs(hashes, hashes, threshold, same=True):
        a, b = sorted((images[i], images[j]), key=lambda f: f.path)
        if a.sha256 != b.sha256:
            pairs.append({"paths": [str(a.path), str(b.path)], "classes": [a.label, b.label],
                          "distance": distance})
    return sorted(pairs, key=lambda p: (p["distance"], p["paths"]))


def _test_near_overlap(
    train: list[ImageFile], test: list[ImageFile], threshold: int
) -> list[dict[str, Any]]:
    """Test files that look like a training file without being byte-identical to it."""
    found = []
    for i, j, distance in hamming_pairs(_hash_array(test), _hash_array(train), threshold, False):
        if test[i].sha256 != train[j].sha256:
            found.append({"test_path": str(test[i].path), "train_path": str(train[j].path),
                          "test_class": test[i].label, "train_class": train[j].label,
                          "distance": distance})
    return sorted(found, key=lambda p: (p["distance"], p["test_path"], p["train_path"]))


def _test_report(train: DatasetScan, test: DatasetScan, threshold: int) -> dict[str, Any]:
    balance = _balance(test.counts())
    report: dict[str, Any] = {
        "test": {"root": str(test.root), "classes": balance["classes"], "total": balance["total"],
                 "unreadable": _unreadable(test.unreadable)},
        "test_overlap": _test_overlap(train, test),
    }
    if threshold > 0:
        report["test_near_overlap"] = _test_near_overlap(train.images, test.images, threshold)
    return report


def _sources_report(scan: DatasetScan, near_threshold: int) -> dict[str, Any]:
    """Per source: images kept, copies of another image, label conflicts (training's rules)."""
    cleaned = clean_images(scan.images, max_distance=near_threshold if near_threshold else None)
    spans = sum(1 for unit in cleaned.units if len({i.source for i in unit}) > 1)
    return {
        "sources": [{"name": s.name, "root": str(s.root), "format": s.kind, **cleaned.counts.get(
            s.name, {})} for s in scan.sources],
        "label_conflicts": [{"paths": _paths(group), "labels": [i.label for i in group],
                             "sources": [i.source for i in group]} for group in cleaned.conflicts],
        "lesions_across_sources": spans,
    }


def inspect_dataset(
    root: Path | str | list[Path | str], test_dir: Path | str | None = None, near_threshold: int = 4
) -> dict[str, Any]:
    """The health report of one or more sources (folder per class, or labels CSV), as JSON data.

    `near_threshold`: largest Hamming distance (bits of a 64-bit perceptual hash) for two files
    to count as near duplicates; 0 turns near-duplicate search (and its hashing) off.
    Raises MelanomaError only when a folder cannot be read as a dataset.
    """
    if not 0 <= near_threshold <= MAX_HAMMING:
        raise MelanomaError(f"near_threshold must be in [0, {MAX_HAMMING}], got {near_threshold}")
    perceptual = near_threshold > 0
    roots = root if isinstance(root, list) else [root]
    scan = scan_sources([parse_source(str(r)) for r in roots], perceptual_hash=perceptual)
    test = scan_dataset(test_dir, perceptual_hash=perceptual) if test_dir is not None else None
    conflicts = scan.conflict_groups()
    report: dict[str, Any] = {
        "root": str(scan.root),
        **_balance(scan.counts()),
        **_image_summary(scan.images),
        "unreadable": _unreadable(scan.unreadable),
        **_layout_problems(scan),
        "duplicate_groups": [_paths(g) for g in scan.duplicate_groups()],
        "conflict_groups": [_paths(g) for g in conflicts],
        "conflicts_by_classes": _conflicts_by_classes(conflicts),
        "test_dir": str(test.root) if test else None,
        "test_overlap": [],
        "near_threshold": near_threshold,
        "near_duplicates": _near_duplicates(scan.images, near_threshold) if perceptual else [],
    }
    report.update(_sources_report(scan, near_threshold))
    if test is not None:
        report.update(_test_report(scan, test, near_threshold))
    return report
