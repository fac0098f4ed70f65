"""What data cleaning left of each class, and the warnings a user must see before trusting a run."""

from __future__ import annotations

from melanoma_cli.data.preparation import PreparedData

MIN_TRAIN_IMAGES = 10
MIN_VALIDATION_IMAGES = 5


def class_counts(data: PreparedData) -> dict[str, dict[str, int]]:
    """Per class: images kept for training and validation, dropped, unreadable and generated.

    `dropped` counts readable files left out by cleaning (duplicate copies, label conflicts,
    holdout overlap); `train` excludes the `generated` (rebalanced) images.
    """
    counts = {}
    for index, name in enumerate(data.classes):
        generated = data.generated.get(name, 0)
        train = int((data.train_labels == index).sum()) - generated
        validation = int((data.val_labels == index).sum())
        counts[name] = {"train": train, "validation": validation,
                        "dropped": data.split.dropped_by_class.get(name, 0),
                        "unreadable": data.unreadable_by_class.get(name, 0), "generated": generated}
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


def no_melanoma_class_warning(melanoma_class: str, classes: list[str]) -> str | None:
    """Why the model will flag nothing, when no class is the melanoma class (else None)."""
    if melanoma_class in classes:
        return None
    return (f"no class is named '{melanoma_class}' (train.melanoma_class; classes: "
            f"{', '.join(classes)}): the model will never flag melanoma; rename that class folder "
            "or set train.melanoma_class")
