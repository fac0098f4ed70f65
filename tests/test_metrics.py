"""Metric values against hand-computed expectations on a fixed prediction set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from melanoma_cli.stats.metrics import (
    bootstrap_auc_interval,
    bootstrap_aucs,
    bootstrap_balanced_accuracy,
    bootstrap_indices,
    evaluation_report,
    melanoma_flags,
    roc_auc,
    summary,
    wilson_interval,
)

CLASSES = ["melanoma", "nevus", "vascular lesion"]
# 10 lesions: 3 melanomas, 4 nevi, 3 vascular. Argmax predictions:
#   melanoma: 0 ok, 1 -> nevus, 2 ok;  nevus: 3 ok, 4 ok, 5 -> melanoma, 6 ok;
#   vascular: 7 ok, 8 ok, 9 -> nevus.
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
PROBABILITIES = np.array([
    [0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.6, 0.3, 0.1],
    [0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1],
    [0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.1, 0.6, 0.3],
])
RESAMPLES = 200  # enough to exercise the bootstrap; the CLI uses 1000


@pytest.fixture(scope="module")
def report() -> dict:
    return evaluation_report(Y_TRUE, PROBABILITIES, CLASSES, "melanoma", None, RESAMPLES)


def test_overall_and_per_class_values(report):
    assert report["n"] == 10
    assert report["classes"] == CLASSES
    assert report["accuracy"] == pytest.approx(0.7)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4 + 2 / 3) / 3)
    assert report["confusion_matrix"] == [[2, 1, 0], [1, 3, 0], [0, 1, 2]]
    expected = {  # n, recall, precision, F1
        "melanoma": (3, 2 / 3, 2 / 3, 2 / 3),
        "nevus": (4, 3 / 4, 3 / 5, 2 * 0.6 * 0.75 / 1.35),
        "vascular lesion": (3, 2 / 3, 1.0, 0.8),
    }
    for name, (n, recall, precision, f1) in expected.items():
        row = report["per_class"][name]
        assert row["n"] == n
        assert row["accuracy"] == pytest.approx(recall)
        assert row["precision"] == pytest.approx(precision)
        assert row["f1"] == pytest.approx(f1)


def test_auc_against_hand_counted_pairs(report):
    # melanoma scores .7 .4 .6 against 7 others: 7 + 6 + 7 of 21 pairs ranked right
    assert report["per_class"]["melanoma"]["auc"] == pytest.approx(20 / 21)
    # nevus: .7 .6 .4 .8 against .2 .5 .3 .2 .2 .6 -> 6 + 5.5 (one tie) + 4 + 6 of 24
    assert report["per_class"]["nevus"]["auc"] == pytest.approx(21.5 / 24)
    assert report["per_class"]["vascular lesion"]["auc"] == pytest.approx(1.0)
    assert report["macro_auc"] == pytest.approx((20 / 21 + 21.5 / 24 + 1) / 3)


def test_melanoma_block_at_argmax(report):
    melanoma = report["melanoma"]
    assert (melanoma["tp"], melanoma["fn"], melanoma["tn"], melanoma["fp"]) == (2, 1, 6, 1)
    assert melanoma["sensitivity"] == pytest.approx(2 / 3)
    assert melanoma["specificity"] == pytest.approx(6 / 7)
    assert melanoma["auc"] == pytest.approx(20 / 21)
    assert melanoma["threshold"] is None


@pytest.mark.parametrize(("threshold", "counts"), [
    (0.45, (2, 1, 6, 1)),  # flags .7 .6 (melanomas) and .5 (a nevus)
    (0.4, (3, 0, 6, 1)),   # p == threshold is flagged
    (0.35, (3, 0, 6, 1)),
    (0.25, (3, 0, 5, 2)),  # flags a nevus predicted as nevus: it still counts as melanoma
    (0.0, (3, 0, 0, 7)),
    (1.01, (0, 3, 7, 0)),
])
def test_melanoma_counts_at_a_threshold(threshold, counts):
    melanoma = evaluation_report(Y_TRUE, PROBABILITIES, CLASSES, "melanoma", threshold, 0)["melanoma"]
    assert (melanoma["tp"], melanoma["fn"], melanoma["tn"], melanoma["fp"]) == counts
    assert melanoma["threshold"] == threshold


def test_flags_follow_the_threshold_or_the_argmax():
    assert melanoma_flags(PROBABILITIES, 0, None).tolist() == [
        True, False, True, False, False, True, False, False, False, False]
    assert melanoma_flags(PROBABILITIES, 0, 0.6).sum() == 2


def test_wilson_interval_known_values():
    assert wilson_interval(8, 10) == pytest.approx((0.490, 0.943), abs=5e-4)
    assert wilson_interval(0, 16) == pytest.approx((0.0, 0.194), abs=5e-4)
    assert wilson_interval(16, 16)[1] == 1.0
    assert wilson_interval(0, 0) is None


def test_intervals_are_present_and_contain_the_estimates(report):
    for key in ("accuracy", "balanced_accuracy", "macro_auc"):
        low, high = report[f"{key}_ci"]
        assert low <= report[key] <= high
    assert report["accuracy_ci"] == pytest.approx(list(wilson_interval(7, 10)))
    nevus = report["per_class"]["nevus"]
    assert nevus["accuracy_ci"] == pytest.approx(list(wilson_interval(3, 4)))
    assert nevus["precision_ci"] == pytest.approx(list(wilson_interval(3, 5)))
    melanoma = report["melanoma"]
    assert melanoma["sensitivity_ci"] == pytest.approx(list(wilson_interval(2, 3)))
    assert melanoma["specificity_ci"] == pytest.approx(list(wilson_interval(6, 7)))
    assert melanoma["auc_ci"] == report["per_class"]["melanoma"]["auc_ci"]
    assert melanoma["auc_ci"][0] <= 20 / 21 <= melanoma["auc_ci"][1]


def test_roc_auc_is_sklearns_and_undefined_with_one_class():
    rng = np.random.default_rng(3)
    labels, scores = rng.integers(0, 2, 50), rng.integers(0, 5, 50) / 4  # many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert roc_auc(np.ones(5), scores[:5]) is None
    assert roc_auc(np.zeros(5), scores[:5]) is None


def test_bootstrap_auc_interval_is_seeded_and_keeps_a_single_positive_in_every_resample():
    labels = np.array([1] + [0] * 9)  # a uniform resample would lack the positive a third of the time
    scores = np.linspace(1, 0, 10)
    first = bootstrap_auc_interval(labels, scores, resamples=300)
    assert first == bootstrap_auc_interval(labels, scores, resamples=300)
    assert first == (1.0, 1.0)
    assert bootstrap_auc_interval(labels, scores, resamples=300, seed=1) == (1.0, 1.0)
    assert bootstrap_auc_interval(np.zeros(10), scores) is None


def test_bootstrap_resamples_within_each_true_class():
    y_true = np.array([2, 0, 1, 1, 0, 2, 1, 1, 1, 0, 1, 3])  # class 3 has a single row
    indices = bootstrap_indices(y_true, 50, seed=7)
    assert indices.shape == (50, len(y_true))
    expected = np.bincount(y_true)
    for row in indices:
        assert np.bincount(y_true[row], minlength=4).tolist() == expected.tolist()
    assert (indices == bootstrap_indices(y_true, 50, seed=7)).all()
    assert not (indices == bootstrap_indices(y_true, 50, seed=8)).all()
    assert len(np.unique(indices[:, y_true[indices[0]] == 1])) > 1  # rows of a class vary


def test_vectorised_auc_equals_sklearn_on_every_resample():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 3, 60)
    scores = rng.integers(0, 6, (60, 3)) / 5  # many ties
    one_vs_rest = y_true[:, None] == np.arange(3)
    indices = bootstrap_indices(y_true, 40, seed=2)
    samples = bootstrap_aucs(one_vs_rest, scores, indices, max_values=7 * 60)  # several chunks
    for row, picked in enumerate(indices):
        for k in range(3):
            assert samples[row, k] == pytest.approx(roc_auc_score(one_vs_rest[picked, k], scores[picked, k]))
    only_positives = bootstrap_aucs(np.ones((60, 1), bool), scores[:, :1], indices)
    assert np.isnan(only_positives).all()


def test_a_rare_class_keeps_its_auc_interval():
    rng = np.random.default_rng(11)
    classes = ["melanoma", "nevus", "dermatofibroma"]
    y_true = np.array([0] * 30 + [1] * 60 + [2] * 2)  # 2 dermatofibromas in 92
    probabilities = rng.dirichlet(np.ones(3), size=len(y_true))
    probabilities[y_true == 2, 2] += 0.4  # ranked high, not perfectly
    probabilities[-1, 2] = 0.01
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    report = evaluation_report(y_true, probabilities, classes, "melanoma", None, RESAMPLES)
    rare = report["per_class"]["dermatofibroma"]
    low, high = rare["auc_ci"]
    assert low < rare["auc"] < high  # the interval is not one point: both rows vary in resamples
    indices = bootstrap_indices(y_true, RESAMPLES)
    samples = bootstrap_aucs((y_true == 2)[:, None], probabilities[:, [2]], indices)
    assert np.isfinite(samples).all()  # no resample lost the class
    assert [low, high] == pytest.approx(list(np.percentile(samples, [2.5, 97.5])))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_bootstrap_balanced_accuracy_matches_sklearn():
    y_pred = PROBABILITIES.argmax(axis=1)
    indices = np.vstack([np.arange(10), bootstrap_indices(Y_TRUE, 5)])
    values = bootstrap_balanced_accuracy(Y_TRUE, y_pred, 3, indices)
    expected = [balanced_accuracy_score(Y_TRUE[i], y_pred[i]) for i in indices]
    assert values == pytest.approx(expected)


def test_absent_class_and_no_melanoma_class_give_nulls_not_nan():
    classes = ["nevus", "vascular lesion", "dermatofibroma"]  # no melanoma class at all
    probabilities = PROBABILITIES[3:][:, [1, 2, 0]]  # lesion 5 is predicted dermatofibroma
    report = evaluation_report(Y_TRUE[3:] - 1, probabilities, classes, "melanoma", 0.5, RESAMPLES)
    absent = report["per_class"]["dermatofibroma"]
    assert absent["n"] == 0 and absent["precision"] == 0.0
    assert absent["accuracy"] is None and absent["accuracy_ci"] is None
    assert absent["auc"] is None and absent["auc_ci"] is None
    assert report["melanoma"] is None
    nevus, vascular = Y_TRUE[3:] == 1, Y_TRUE[3:] == 2  # dermatofibroma has no AUC: left out
    expected = (roc_auc_score(nevus, probabilities[:, 0]) + roc_auc_score(vascular, probabilities[:, 1])) / 2
    assert report["macro_auc"] == pytest.approx(expected)
    json.dumps(report, allow_nan=False)  # raises on NaN or infinity


def test_training_summary_per_class_recall_with_an_absent_class():
    classes = [*CLASSES, "dermatofibroma"]  # a model class with no validation images
    probabilities = np.hstack([PROBABILITIES, np.zeros((10, 1))])
    result = summary(Y_TRUE, probabilities, classes)
    assert result["n"] == 10 and result["accuracy"] == pytest.approx(0.7)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4 + 2 / 3) / 3)
    assert result["per_class"] == {
        "melanoma": {"n": 3, "accuracy": pytest.approx(2 / 3)},
        "nevus": {"n": 4, "accuracy": pytest.approx(3 / 4)},
        "vascular lesion": {"n": 3, "accuracy": pytest.approx(2 / 3)},
        "dermatofibroma": {"n": 0, "accuracy": None},
    }


def test_training_summary_of_no_images_is_all_nulls():
    result = summary(np.array([], int), np.zeros((0, 2)), ["melanoma", "nevus"])
    assert result == {"n": 0, "accuracy": None, "balanced_accuracy": None,
                      "per_class": {"melanoma": {"n": 0, "accuracy": None},
                                    "nevus": {"n": 0, "accuracy": None}}}


def test_threshold_reaches_the_sensitivity_and_survives_tiny_score_changes():
    from melanoma_cli.stats.metrics import threshold_for_sensitivity

    is_positive = np.array([1, 1, 1, 1, 0, 0], bool)
    scores = np.array([0.9, 0.6, 0.30, 0.2, 0.5, 0.1])
    threshold = threshold_for_sensitivity(is_positive, scores, 0.75)  # 3 of 4 positives
    assert threshold == pytest.approx(0.25)  # halfway between 0.30 (flagged) and 0.2 (not)
    for noise in (-1e-6, 0.0, 1e-6):
        assert int(((scores + noise) >= threshold)[is_positive].sum()) == 3
    every = threshold_for_sensitivity(is_positive, scores, 1.0)
    assert 0.2 * 0.999 < every < 0.2 and threshold_for_sensitivity(~is_positive & False, scores, 1) is None
