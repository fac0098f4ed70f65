"""A dataset health report: class balance, unreadable files, duplicates, conflicts, leakage.

Everything comes from one read of each file (data.scan), decoded at the scale training decodes
it, and the cleaning is training's own: `clean_images` with the config's data section (near
duplicates, conflicts, trusted sources, holdout folders), so what the report says training keeps,
counts as a copy or drops is what training does. Nothing here prints.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from melanoma_cli.config import DataConfig, SourceConfig
from melanoma_cli.data.dedupe import Cleaned, Fingerprints, clean_images
from melanoma_cli.data.images import Unreadable
from melanoma_cli.data.preparation import holdout_index
from melanoma_cli.data.scan import DatasetScan, ImageFile, scan_sources
from melanoma_cli.data.sources import check_folder
from melanoma_cli.data.split import dropped_counts


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
    """Every test file whose exact content is also in the training sources."""
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


def _hash_distance(a: ImageFile, b: ImageFile) -> int:
    """Bits in which the two files' perceptual hashes differ."""
    return (int(a.phash or "0", 16) ^ int(b.phash or "0", 16)).bit_count()


def _near_duplicates(images: list[ImageFile], distance: int) -> list[dict[str, Any]]:
    """Pairs of different files that training takes for one picture (hash and thumbnail), closest
    first."""
    prints = Fingerprints.of(images)
    pairs = []
    for i, j in prints.same_pictures(prints, distance):
        if i < j and images[i].sha256 != images[j].sha256:
            a, b = sorted((images[i], images[j]), key=lambda f: f.path)
            pairs.append({"paths": [str(a.path), str(b.path)], "classes": [a.label, b.label],
                          "distance": _hash_distance(a, b)})
    return sorted(pairs, key=lambda p: (p["distance"], p["paths"]))


def _test_near_overlap(train: list[ImageFile], test: list[ImageFile], distance: int) -> list[dict[str, Any]]:
    """Test files that show the same picture as a training file without being byte-identical."""
    found = []
    for i, j in Fingerprints.of(test).same_pictures(Fingerprints.of(train), distance):
        if test[i].sha256 != train[j].sha256:
            found.append({"test_path": str(test[i].path), "train_path": str(train[j].path),
                          "test_class": test[i].label, "train_class": train[j].label,
                          "distance": _hash_distance(test[i], train[j])})
    return sorted(found, key=lambda p: (p["distance"], p["test_path"], p["train_path"]))


def _test_report(train: DatasetScan, test: DatasetScan, distance: int | None) -> dict[str, Any]:
    balance = _balance(test.counts())
    report: dict[str, Any] = {
        "test": {"root": str(test.root), "classes": balance["classes"], "total": balance["total"],
                 "unreadable": _unreadable(test.unreadable)},
        "test_overlap": _test_overlap(train, test),
    }
    if distance is not None:
        report["test_near_overlap"] = _test_near_overlap(train.images, test.images, distance)
    return report


def _conflict(group: list[ImageFile], kept: dict[Path, str]) -> dict[str, Any]:
    """One picture whose copies disagree on the label, and what training keeps of it."""
    return {"paths": _paths(group), "labels": [i.label for i in group],
            "sources": [i.source for i in group],
            "kept": [{"path": str(i.path), "label": kept[i.path]} for i in group if i.path in kept]}


def _cleaning_report(scan: DatasetScan, cleaned: Cleaned, data: DataConfig) -> dict[str, Any]:
    """Per source and class: what training keeps, counts as a copy of another image or drops."""
    kept = {image.path: image.label for unit in cleaned.units for image in unit}
    kept_by_class = Counter(kept.values())
    spans = sum(1 for unit in cleaned.units if len({i.source for i in unit}) > 1)
    return {
        "sources": [{"name": s.name, "root": str(s.root), "format": s.kind, **cleaned.counts.get(
            s.name, {})} for s in scan.sources],
        "label_conflicts": [_conflict(group, kept) for group in cleaned.conflicts],
        "lesions_across_sources": spans,
        "cleaning": {
            "near_duplicate_distance": data.near_duplicate_distance,
            "drop_conflicts": data.drop_conflicts,
            "trust_sources": list(data.trust_sources),
            "holdout_dirs": list(data.holdout_dirs),
            "kept_by_class": {name: kept_by_class[name] for name in scan.classes},
            "dropped_by_class": {name: cleaned.dropped_by_class[name] for name in scan.classes},
            "dropped": dropped_counts(cleaned),
            "conflicts_resolved": cleaned.resolved,
        },
    }


def inspect_dataset(sources: Sequence[SourceConfig], data: DataConfig | None = None,
                    test: SourceConfig | None = None) -> dict[str, Any]:
    """The health report of the config's sources and `sources` (either layout), as JSON data.

    `data` is the config's data section (defaults if None): the sources, classes and image size
    are read as `train` reads them, and cleaning follows its near-duplicate distance (null: exact
    copies only, and no perceptual hashing), conflict rule, trusted sources and holdout folders.
    `test` (either layout) is checked for files whose picture is also in the sources.
    Raises MelanomaError only when a source cannot be read as a dataset.
    """
    data = data or DataConfig()
    distance = data.near_duplicate_distance
    read = {"perceptual_hash": distance is not None, "image_size": data.image_size, "keep_pixels": False}
    scan = scan_sources([*data.sources, *sources], data.classes, **read)
    if test is not None:
        check_folder(Path(test.path), "test folder")
    test_scan = scan_sources([test], **read) if test is not None else None
    cleaned = clean_images(scan.images, drop_conflicts=data.drop_conflicts, trust_sources=data.trust_sources,
                           max_distance=distance, holdout=holdout_index([Path(p) for p in data.holdout_dirs]))
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
        "test_dir": str(test_scan.root) if test_scan else None,
        "test_overlap": [],
        "near_duplicates": _near_duplicates(scan.images, distance) if distance is not None else [],
        **_cleaning_report(scan, cleaned, data),
    }
    if test_scan is not None:
        report.update(_test_report(scan, test_scan, distance))
    return report
