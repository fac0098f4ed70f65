"""matplotlib figures: training curves, confusion matrix, class distribution (written atomically)."""

from __future__ import annotations

import csv
from pathlib import Path

from melanoma_cli.utils.atomic import write_with


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    plt = _pyplot()
    figure.tight_layout()
    write_with(path, lambda tmp: figure.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png"))
    plt.close(figure)


LOSS_TITLE = "loss (train and validation: same label smoothing and class weights)"


def plot_training_curves(history_csv: Path, path: Path) -> None:
    """Loss and accuracy per epoch (history.csv counts epochs from 1), train against validation.

    Both loss curves measure the same loss (see LOSS_TITLE), so they can be compared.
    """
    with history_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [int(r["epoch"]) for r in rows]
    panels = [(LOSS_TITLE, ["loss", "val_loss"]),
              ("accuracy", ["accuracy", "val_accuracy", "val_balanced_accuracy"])]
    for axis, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if rows and key in rows[0]:
                axis.plot(epochs, [float(r[key]) for r in rows], marker="o", label=key)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    _save(figure, path)


def plot_confusion_matrix(matrix, classes: list[str], path: Path) -> None:
    """Counts and row-normalised rates side by side (rows: true class)."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    size = max(6, 0.7 * len(classes) + 3)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for axis, values, title, fmt in ((axes[0], matrix, "counts", "d"),
                                     (axes[1], normalised, "row-normalised (recall)", ".2f")):
        ConfusionMatrixDisplay(values, display_labels=classes).plot(
            ax=axis, cmap="Blues", values_format=fmt, colorbar=False, xticks_rotation=45,
            text_kw={"fontsize": 8})
        axis.set_title(title)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        plt.setp(axis.get_xticklabels(), ha="right", rotation_mode="anchor")
    _save(figure, path)


def plot_class_distribution(counts: dict[str, int], path: Path) -> None:
    """A horizontal bar chart of images per class."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(counts) + 1.5))
    names = list(counts)
    axis.barh(names, [counts[n] for n in names], color="#4c72b0")
    axis.invert_yaxis()
    axis.set_xlabel("images")
    for i, name in enumerate(names):
        axis.text(counts[name], i, f" {counts[name]}", va="center")
    _save(figure, path)
