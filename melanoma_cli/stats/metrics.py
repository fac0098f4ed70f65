"""Classification metrics from labels and probabilities (scikit-learn underneath)."""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0

Interval = tuple[float, float]


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray,
                       classes: list[str]) -> dict[str, dict]:
    """Recall of each class with its support n (accuracy None where n = 0)."""
    from sklearn.metrics import recall_score

    labels = list(range(len(classes)))
    support = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=len(classes))
    recall = (recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
              if len(y_true) else support * np.nan)
    return {name: {"n": int(support[k]), "accuracy": _number(recall[k])}
            for k, name in enumerate(classes)}


def summary(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy (mean recall over classes present) and per-class accuracy."""
    from sklearn.metrics import balanced_accuracy_score

    y_pred = probabilities.argmax(axis=1)
    n = len(y_true)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected here
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y_true, y_pred)) if n else None
    return {
        "n": n,
        "accuracy": float((y_pred == y_true).mean()) if n else None,
        "balanced_accuracy": balanced,
        "per_class": per_class_accuracy(y_true, y_pred, classes),
    }


def threshold_for_sensitivity(is_positive: np.ndarray, scores: np.ndarray,
                              sensitivity: float) -> float | None:
    """A score threshold whose sensitivity (score >= threshold) reaches `sensitivity`.

    It lies halfway between the last positive score it must flag and the next one below, so
    that the same images scored by another engine or batch (differences of ~1e-7) get the same
    flags; below the lowest positive score when every positive is needed.
    """
    positives = np.sort(scores[is_positive.astype(bool)])[::-1]
    if len(positives) == 0:
        return None
    needed = max(1, math.ceil(sensitivity * len(positives) - 1e-9))
    lowest_flagged = float(positives[needed - 1])
    if needed < len(positives):
        return (lowest_flagged + float(positives[needed])) / 2
    return lowest_flagged * (1 - 1e-4)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval | None:
    """Wilson score interval of the proportion successes / n (None when n = 0)."""
    if n == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """scikit-learn's ROC AUC; None unless both positives and negatives are present."""
    from sklearn.metrics import roc_auc_score

    is_positive = np.asarray(is_positive, dtype=bool)
    if is_positive.all() or not is_positive.any():
        return None
    return float(roc_auc_score(is_positive, scores))


def bootstrap_indices(y_true: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n) row indices drawn with replacement within each true class, reproducibly.

    Stratified: every resample holds as many rows of each class as `y_true` does, so no class
    drops out of a resample (its AUC always exists) and balanced accuracy always averages over
    the same classes. Columns are grouped by class, in class order.
    """
    y_true = np.asarray(y_true)
    rng = np.random.default_rng(seed)
    blocks = [rows[rng.integers(0, len(rows), size=(resamples, len(rows)))]
              for rows in (np.flatnonzero(y_true == label) for label in np.unique(y_true))]
    return np.hstack(blocks) if blocks else np.zeros((resamples, 0), dtype=np.int64)


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> Interval | None:
    """Percentile interval of the finite bootstrap samples (None when there are none)."""
    values = np.asarray(samples, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """(resamples, n): how many times each of the n rows is drawn in each resample."""
    offsets = np.arange(len(indices))[:, None] * n
    return np.bincount((indices + offsets).ravel(), minlength=len(indices) * n).reshape(len(indices), n)


def resampled_aucs(is_positive: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of one score column on every resample at once: the Mann-Whitney U statistic.

    A resample is given by `counts` (resamples, n), the times each row is drawn. The scores are
    sorted once; in each resample a run of tied scores holding c rows takes the average rank
    (rows below) + (c + 1) / 2, so AUC = (sum of the positives' ranks - P(P + 1) / 2) / (P N),
    a tie counting one half as in roc_auc_score. NaN where a resample lacks positives or negatives.
    """
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # one run per distinct score
    drawn = counts[:, order]
    per_score = np.add.reduceat(drawn, starts, axis=1)
    positives_per_score = np.add.reduceat(drawn * is_positive[order], starts, axis=1)
    ranks = np.cumsum(per_score, axis=1) - per_score + (per_score + 1) / 2
    positives = positives_per_score.sum(axis=1)
    negatives = per_score.sum(axis=1) - positives
    u = (positives_per_score * ranks).sum(axis=1) - positives * (positives + 1) / 2
    pairs = (positives * negatives).astype(float)
    return np.divide(u, pairs, out=np.full(pairs.shape, np.nan), where=pairs > 0)


def bootstrap_aucs(is_positive: np.ndarray, scores: np.ndarray, indices: np.ndarray,
                   max_values: int = 1 << 23) -> np.ndarray:
    """(resamples, k) AUCs of k score columns on each resample of rows (NaN: one class only).

    Vectorised over resamples (`resampled_aucs`), `max_values` counts at a time to bound memory.
    """
    n = is_positive.shape[0]
    samples = np.full((len(indices), is_positive.shape[1]), np.nan)
    if n == 0:
        return samples
    step = max(1, max_values // n)
    for start in range(0, len(indices), step):
        counts = resample_counts(indices[start:start + step], n)
        for column in range(is_positive.shape[1]):
            samples[start:start + step, column] = resampled_aucs(is_positive[:, column],
                                                                 scores[:, column], counts)
    return samples


def bootstrap_auc_interval(
    is_positive: np.ndarray,
    scores: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Interval | None:
    """Seeded percentile-bootstrap interval of one ROC AUC, resampled within positives and
    negatives (None unless both are present)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    indices = bootstrap_indices(is_positive, resamples, seed)
    samples = bootstrap_aucs(is_positive[:, None], np.asarray(scores)[:, None], indices)
    return percentile_interval(samples[:, 0], confidence)


def bootstrap_balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                                indices: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each resample: the mean recall over the classes present in it.

    The definition of sklearn's balanced_accuracy_score, vectorised over resamples.
    """
    true, predicted = y_true[indices], y_pred[indices]
    labels = np.arange(num_classes)[:, None, None]
    support = (true == labels).sum(axis=2)
    hits = ((true == labels) & (predicted == labels)).sum(axis=2)
    recall = np.divide(hits, support, out=np.full(support.shape, np.nan), where=support > 0)
    return np.nanmean(recall, axis=0)


def melanoma_flags(probabilities: np.ndarray, melanoma_index: int,
                   threshold: float | None) -> np.ndarray:
    """Rows flagged as melanoma: p(melanoma) >= threshold, or melanoma is the argmax without one.

    Compared in float64, as reported, so a printed probability and its flag always agree.
    """
    if threshold is None:
        return probabilities.argmax(axis=1) == melanoma_index
    return probabilities[:, melanoma_index].astype(np.float64) >= threshold


def _number(value: float | None) -> float | None:
    """A JSON-safe float: None for missing or non-finite values."""
    return None if value is None or not np.isfinite(value) else float(value)


def _interval(bounds: Interval | None) -> list[float] | None:
    return None if bounds is None else [bounds[0], bounds[1]]


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, aucs: list[float | None],
               auc_samples: np.ndarray, classes: list[str]) -> dict[str, dict]:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(classes))), zero_division=np.nan
    )
    result = {}
    for k, name in enumerate(classes):
        hits, predicted = int(((y_true == k) & (y_pred == k)).sum()), int((y_pred == k).sum())
        result[name] = {
            "n": int(support[k]),
            "accuracy": _number(recall[k]),
            "accuracy_ci": _interval(wilson_interval(hits, int(support[k]))),
            "precision": _number(precision[k]),
            "precision_ci": _interval(wilson_interval(hits, predicted)),
            "f1": _number(f1[k]),
            "auc": aucs[k],
            "auc_ci": _interval(percentile_interval(auc_samples[:, k])),
        }
    return result


def _melanoma(y_true: np.ndarray, probabilities: np.ndarray, index: int,
              threshold: float | None, per_class_row: dict) -> dict:
    from sklearn.metrics import confusion_matrix

    flagged = melanoma_flags(probabilities, index, threshold)
    counts = confusion_matrix(y_true == index, flagged, labels=[False, True]).ravel()
    tn, fp, fn, tp = (int(v) for v in counts)
    return {
        "n": tp + fn,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "sensitivity_ci": _interval(wilson_interval(tp, tp + fn)),
        "specificity": tn / (tn + fp) if tn + fp else None,
        "specificity_ci": _interval(wilson_interval(tn, tn + fp)),
        "auc": per_class_row["auc"],
        "auc_ci": per_class_row["auc_ci"],
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "threshold": threshold,
    }


def evaluation_report(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
    melanoma_class: str | None,
    threshold: float | None,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict:
    """The test-set report, JSON-safe (None where a value is undefined, never NaN).

    `y_true` holds indices into `classes` (one or more rows). Class predictions are the argmax;
    the melanoma block counts a lesion as melanoma when flagged (p(melanoma) >= `threshold`,
    or argmax when it is None), and is None when `melanoma_class` is not a model class.
    Intervals (`*_ci`, 95%): Wilson for proportions, otherwise a seeded percentile bootstrap
    that resamples within each true class (stratified, so every class present keeps its AUC);
    the macro AUC averages the one-vs-rest AUCs of the classes present in the test set.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_pred = probabilities.argmax(axis=1)
    n, labels = len(y_true), np.arange(len(classes))
    one_vs_rest = y_true[:, None] == labels
    aucs = [roc_auc(one_vs_rest[:, k], probabilities[:, k]) for k in labels]
    scored = [k for k in labels if aucs[k] is not None]
    indices = bootstrap_indices(y_true, resamples)
    auc_samples = bootstrap_aucs(one_vs_rest, probabilities, indices)
    per_class = _per_class(y_true, y_pred, aucs, auc_samples, classes)
    macro_auc = float(np.mean([aucs[k] for k in scored])) if scored else None
    macro_auc_ci = percentile_interval(auc_samples[:, scored].mean(axis=1)) if scored else None
    melanoma = None
    if melanoma_class in classes:
        index = classes.index(melanoma_class)
        melanoma = {"class": melanoma_class, **_melanoma(
            y_true, probabilities, index, threshold, per_class[melanoma_class])}
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected here
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    return {
        "n": n,
        "classes": list(classes),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_ci": _interval(wilson_interval(int((y_pred == y_true).sum()), n)),
        "balanced_accuracy": balanced,
        "balanced_accuracy_ci": _interval(percentile_interval(
            bootstrap_balanced_accuracy(y_true, y_pred, len(classes), indices))),
        "macro_auc": macro_auc,
        "macro_auc_ci": _interval(macro_auc_ci),
        "per_class": per_class,
        "melanoma": melanoma,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "confidence": CONFIDENCE,
        "bootstrap_resamples": resamples,
    }


CHOSEN_HERE = "threshold and checkpoint chosen here"


def selection_report(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
    melanoma_class: str | None,
    threshold: float | None,
    monitor: str,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict:
    """`evaluation_report` of the split that chose the checkpoint (by `monitor`) and the threshold.

    What those choices fixed is reported without an interval, its reason under `fixed_here`:
    the melanoma sensitivity (the threshold was set to reach it) and the monitored metric (the
    checkpoint maximised it). The other figures keep their intervals, but the choices made
    here flatter them: `chosen_here` says so.
    """
    report = evaluation_report(y_true, probabilities, classes, melanoma_class, threshold, resamples)
    fixed = {}
    if report["melanoma"] is not None and threshold is not None:
        report["melanoma"]["sensitivity_ci"] = None
        fixed["melanoma.sensitivity"] = ("fixed by construction (the melanoma threshold was set on this "
                                         "split to reach it)")
    metric = monitor.removeprefix("val_")
    if f"{metric}_ci" in report:
        report[f"{metric}_ci"] = None
        fixed[metric] = f"the checkpoint was chosen by {monitor} on this split"
    return {**report, "chosen_here": CHOSEN_HERE, "fixed_here": fixed}
