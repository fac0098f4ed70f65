"""From scanned sources to a clean, seeded, grouped and stratified train/validation split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from melanoma_cli.data.dedupe import Cleaned, HoldoutIndex, clean_images, unit_label
from melanoma_cli.data.parts import stratified_group_split
from melanoma_cli.data.scan import DatasetScan, ImageFile
from melanoma_cli.utils.errors import MelanomaError


@dataclass
class Split:
    """Training and validation files plus an account of what was left out and why."""

    classes: list[str]
    train: list[ImageFile]
    validation: list[ImageFile]
    dropped: dict[str, int] = field(default_factory=dict)
    sources: dict[str, dict[str, int]] = field(default_factory=dict)  # per source: kept, duplicates, ...
    conflicts_resolved: int = 0
    dropped_by_class: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        """Counts per class (and per source) for the run record."""
        def per_class(files: list[ImageFile]) -> dict[str, int]:
            counts = dict.fromkeys(self.classes, 0)
            for f in files:
                counts[f.label] += 1
            return counts

        return {
            "train": per_class(self.train),
            "validation": per_class(self.validation),
            "dropped": self.dropped,
            "sources": self.sources,
            "conflicts_resolved": self.conflicts_resolved,
        }


def dropped_counts(cleaned: Cleaned) -> dict[str, int]:
    """Copies left out by cleaning, by reason (as metrics.json `data.dropped` records them)."""
    totals = cleaned.totals()
    return {"duplicate_copies": totals["duplicates"], "label_conflicts": totals["conflicts"],
            "holdout_overlap": totals["holdout"]}


def _check_sizes(units: list[list[ImageFile]], scan: DatasetScan, minimum: int) -> None:
    counts = dict.fromkeys(scan.classes, 0)
    for unit in units:
        counts[unit_label(unit)] += 1
    too_few = [f"'{name}' ({n})" for name, n in counts.items() if n < minimum]
    if too_few:
        raise MelanomaError(f"class(es) {', '.join(too_few)} in {scan.where} have fewer than "
                            f"{minimum} usable images (or lesions) after cleaning")


def _random_split(units: list[list[ImageFile]], fraction: float, seed: int, where: str):
    """Stratified by each unit's label; a unit (lesion, duplicate cluster) stays whole."""
    return stratified_group_split(units, [unit_label(u) for u in units], fraction, seed, where)


def _source_split(units: list[list[ImageFile]], source: str, scan: DatasetScan):
    """Units holding an image of `source` validate; the rest train."""
    if source not in {s.name for s in scan.sources}:
        names = ", ".join(f"'{s.name}'" for s in scan.sources)
        raise MelanomaError(f"config key 'data.validation_source': no source named '{source}' "
                            f"(sources: {names})")
    validation = [u for u in units if any(i.source == source for i in u)]
    train = [u for u in units if not any(i.source == source for i in u)]
    if not validation or not train:
        raise MelanomaError(f"validation source '{source}' leaves "
                            f"{'nothing to validate on' if not validation else 'nothing to train on'}")
    return train, validation


def split_dataset(
    scan: DatasetScan,
    validation_split: float,
    seed: int,
    drop_conflicts: bool = True,
    holdout: HoldoutIndex | None = None,
    min_images_per_class: int = 2,
    *,
    trust_sources: Sequence[str] = (),
    near_duplicate_distance: int | None = None,
    validation_source: str | None = None,
) -> Split:
    """De-duplicate, then split so that no lesion or duplicate cluster is on both sides."""
    cleaned = clean_images(scan.images, drop_conflicts=drop_conflicts, trust_sources=trust_sources,
                           max_distance=near_duplicate_distance, holdout=holdout)
    _check_sizes(cleaned.units, scan, min_images_per_class)
    if validation_source is not None:
        train_units, val_units = _source_split(cleaned.units, validation_source, scan)
    else:
        train_units, val_units = _random_split(cleaned.units, validation_split, seed, scan.where)

    def flatten(chosen: list[list[ImageFile]]) -> list[ImageFile]:
        return sorted((f for unit in chosen for f in unit), key=lambda f: str(f.path))

    return Split(scan.classes, flatten(train_units), flatten(val_units), dropped_counts(cleaned),
                 cleaned.counts, cleaned.resolved, dict(cleaned.dropped_by_class))
