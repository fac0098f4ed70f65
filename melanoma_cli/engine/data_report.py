"""What data cleaning left of each class, and the warnings a user must see before trusting a run."""

from __future__ import annotations

from pathlib import Path

from melanoma_cli.data.preparation import PreparedData

MIN_TRAIN_IMAGES = 10
MIN_VALIDATION_IMAGES = 5


def _files_in(folder: Path) -> int:
    """Entries a scan looks at in a class folder: everything but hidden names and subfolders."""
    try:
        return sum(1 for p in folder.iterdir() if not p.name.startswith(".") and not p.is_dir())
    except OSError:
        return 0


def class_counts(data: PreparedData, data_dir: Path) -> dict[str, dict[str, int]]:
    """Per class: images kept for training and validation, dropped, unreadable and generated.

    `dropped` counts readable files left out by cleaning (duplicate copies, label conflicts,
    holdout overlap); `train` excludes the `generated` (rebalanced) images.
    """
    unreadable = {name: 0 for name in data.classes}
    for item in data.skipped:
        if item.path.parent.name in unreadable and item.path.parent.parent == data_dir:
            unreadable[item.path.parent.name] += 1
    counts = {}
    for index, name in enumerate(data.classes):
        generated = data.generated.get(name, 0)
        train = int((data.train_labels == index).sum()) - generated
        validation = int((data.val_labels == index).sum())
        dropped = max(0, _files_in(data_dir / name) - train - validation - unreadable[name])
        counts[name] = {"train": train, "validation": validation, "dropped": dropped,
                        "unreadable": unreadable[name], "generated": generated}
    return counts


def small_class_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """One warning per class with too few images to train on or to judge it by."""
    warnings = []
    for name, row in counts.items():
        few = []
        if row["train"] < MIN_TRAIN_IMAGES:
            few.append(f"{row['train']} training image(s) (< {MIN_TRAIN_IMAGES})")
        if row["validation"] < MIN_VALIDATION_IMAGES:
            few.append(f"{row['validation']} validation image(s) (< {MIN_VALIDATION_IMAGES})")
        if few:
            warnings.append(f"class '{name}' has only {' and '.join(few)} after cleaning: its "
                            "validation metrics are unreliable")
    return warnings


def no_threshold_warning(melanoma_class: str) -> str:
    """Why a run has no melanoma threshold, and what the flag does instead."""
    return (f"no '{melanoma_class}' image in validation: no melanoma threshold could be set, so "
            "the melanoma flag falls back to top-1 (flagged when melanoma is the most likely class)")
