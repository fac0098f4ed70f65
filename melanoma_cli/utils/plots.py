"""matplotlib figures: training curves, confusion matrix, class distribution (written atomically),
and the Grad-CAM figure (as PNG bytes)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from melanoma_cli.utils.atomic import write_with

PANEL_INCHES = 2.6  # one image panel of the Grad-CAM figure
TITLE_INCHES = 0.7  # two lines of title above the panels
FIGURE_DPI = 100
OVERLAY_ALPHA = 0.45


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


def gradcam_figure_size(panels: int) -> tuple[int, int]:
    """Width and height in pixels of a Grad-CAM figure with `panels` panels (image + heat maps)."""
    return round(PANEL_INCHES * panels * FIGURE_DPI), round((PANEL_INCHES + TITLE_INCHES) * FIGURE_DPI)


def gradcam_figure_png(image: Any, heatmaps: dict[str, Any], title: str, highlight: bool) -> bytes:
    """The image, then each heat map (values in [0, 1]) over it, under a two-line `title` (dark
    red when `highlight`), as PNG bytes."""
    plt = _pyplot()
    panels = 1 + len(heatmaps)
    width, height = gradcam_figure_size(panels)
    figure, axes = plt.subplots(1, panels, figsize=(width / FIGURE_DPI, height / FIGURE_DPI),
                                dpi=FIGURE_DPI, squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image (model input)", fontsize=8)
    for axis, (name, heatmap) in zip(axes[0, 1:], heatmaps.items(), strict=True):
        axis.imshow(image)
        axis.imshow(heatmap, cmap="jet", alpha=OVERLAY_ALPHA, vmin=0.0, vmax=1.0)
        nothing = "" if heatmap.max() > 0 else "\n(no region raised this score)"
        axis.set_title(f"Grad-CAM: {name}{nothing}", fontsize=8)
    for axis in axes[0]:
        axis.set_axis_off()
    figure.suptitle(title, fontsize=8, color="darkred" if highlight else "black")
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, wspace=0.04,
                           top=PANEL_INCHES / (PANEL_INCHES + TITLE_INCHES))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(figure)
    return buffer.getvalue()
