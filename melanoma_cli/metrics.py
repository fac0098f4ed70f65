"""Classification metrics from labels and probabilities (scikit-learn underneath)."""

from __future__ import annotations

import math

import numpy as np


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """Recall of each class with its support n (accuracy None where n = 0)."""
    result = {}
    for index, name in enumerate(classes):
        mask = y_true == index
        n = int(mask.sum())
        result[name] = {"n": n, "accuracy": float((y_pred[mask] == index).mean()) if n else None}
    return result


def summary(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy (mean recall over classes present) and per-class accuracy."""
    from sklearn.metrics import balanced_accuracy_score

    y_pred = probabilities.argmax(axis=1)
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else None,
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else None,
        "per_class": per_class_accuracy(y_true, y_pred, classes),
    }


def threshold_for_sensitivity(is_positive: np.ndarray, scores: np.ndarray, sensitivity: float) -> float | None:
    """The highest score threshold whose sensitivity (score >= threshold) reaches `sensitivity`."""
    positives = np.sort(scores[is_positive.astype(bool)])[::-1]
    if len(positives) == 0:
        return None
    needed = max(1, math.ceil(sensitivity * len(positives) - 1e-9))
    return float(positives[needed - 1])
