"""From a scanned dataset to a clean, seeded, stratified train/validation split."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from melanoma_cli.data.scan import DatasetScan, ImageFile
from melanoma_cli.utils.errors import MelanomaError


@dataclass
class Split:
    """Training and validation files plus an account of what was left out and why."""

    classes: list[str]
    train: list[ImageFile]
    validation: list[ImageFile]
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        """Counts per class for the run record."""
        def per_class(files: list[ImageFile]) -> dict[str, int]:
            counts = dict.fromkeys(self.classes, 0)
            for f in files:
                counts[f.label] += 1
            return counts

        return {
            "train": per_class(self.train),
            "validation": per_class(self.validation),
            "dropped": self.dropped,
        }


def clean_files(
    scan: DatasetScan, drop_conflicts: bool, holdout_hashes: set[str]
) -> tuple[list[list[ImageFile]], dict[str, int]]:
    """Group files by content and drop what must not be trained on.

    Returns units (all files sharing one content hash, after keeping one copy per class) and
    counts of dropped files by reason.
    """
    by_hash: dict[str, list[ImageFile]] = defaultdict(list)
    for image in scan.images:
        by_hash[image.sha256].append(image)
    dropped = {"duplicate_copies": 0, "label_conflicts": 0, "holdout_overlap": 0}
    units = []
    for content, files in sorted(by_hash.items(), key=lambda item: str(item[1][0].path)):
        if content in holdout_hashes:
            dropped["holdout_overlap"] += len(files)
            continue
        one_per_class = {f.label: f for f in sorted(files, key=lambda f: str(f.path), reverse=True)}
        dropped["duplicate_copies"] += len(files) - len(one_per_class)
        if len(one_per_class) > 1 and drop_conflicts:
            dropped["label_conflicts"] += len(one_per_class)
            continue
        units.append(sorted(one_per_class.values(), key=lambda f: f.label))
    return units, dropped


def split_dataset(
    scan: DatasetScan,
    validation_split: float,
    seed: int,
    drop_conflicts: bool = True,
    holdout_hashes: set[str] | None = None,
    min_images_per_class: int = 2,
) -> Split:
    """Stratified split by content: identical files always land on the same side."""
    from sklearn.model_selection import train_test_split

    units, dropped = clean_files(scan, drop_conflicts, holdout_hashes or set())
    labels = [unit[0].label for unit in units]
    counts = {name: labels.count(name) for name in scan.classes}
    too_few = [f"'{name}' ({n})" for name, n in counts.items() if n < min_images_per_class]
    if too_few:
        raise MelanomaError(
            f"class folder(s) {', '.join(too_few)} in '{scan.root}' have fewer than "
            f"{min_images_per_class} usable images after cleaning"
        )
    try:
        train_units, val_units = train_test_split(
            units, test_size=validation_split, random_state=seed, stratify=labels
        )
    except ValueError as exc:
        raise MelanomaError(f"cannot split '{scan.root}' {validation_split:.0%}: {exc}") from exc

    def flatten(chosen: list[list[ImageFile]]) -> list[ImageFile]:
        return sorted((f for unit in chosen for f in unit), key=lambda f: str(f.path))

    return Split(scan.classes, flatten(train_units), flatten(val_units), dropped)
