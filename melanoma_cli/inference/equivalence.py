"""Is the int8 export the same classifier as the float one? The equivalence report and its rule.

Both LiteRT exports classify the same outside test sets; the report gives, per set and with n:
top-1 and melanoma-flag agreement and the |p difference| (in the model's own classes), and each
model's balanced accuracy, melanoma AUC, sensitivity and specificity at the stored threshold
(scored in the test set's own classes, merged as `evaluate` merges them). The int8 export may
become the default LiteRT engine only when `judge` passes it on every set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.inference.evaluation import EvaluationResult, evaluate_folder
from melanoma_cli.runtime.classifier import Classifier
from melanoma_cli.stats.metrics import melanoma_flags
from melanoma_cli.utils.progress import Progress, no_progress

MIN_AGREEMENT = 0.98  # top-1 and melanoma-flag agreement, each set
MAX_METRIC_CHANGE = 0.01  # |int8 - float| of balanced accuracy and melanoma AUC, each set


def _scores(result: EvaluationResult) -> dict[str, Any]:
    report = result.report
    melanoma = report["melanoma"] or {}
    return {
        "balanced_accuracy": report["balanced_accuracy"],
        "melanoma_auc": melanoma.get("auc"),
        "melanoma_sensitivity": melanoma.get("sensitivity"),
        "melanoma_specificity": melanoma.get("specificity"),
        "melanoma_n": melanoma.get("n"),
        "accuracy": report["accuracy"],
    }


def compare_on(reference: Classifier, candidate: Classifier, test_dir: Path,
               progress: Progress = no_progress) -> dict[str, Any]:
    """Float (`reference`) vs int8 (`candidate`) on one test set."""
    float_result = evaluate_folder(reference, test_dir, resamples=0, progress=progress)
    int8_result = evaluate_folder(candidate, test_dir, resamples=0, progress=progress)
    if [str(p) for p in float_result.paths] != [str(p) for p in int8_result.paths]:
        raise RuntimeError(f"the two models read different images of '{test_dir}'")
    expected, got = float_result.model_probabilities, int8_result.model_probabilities
    diff = np.abs(got - expected)
    melanoma = reference.classes.index(reference.melanoma_class) if reference.melanoma_class else None
    flags = None
    if melanoma is not None:
        threshold = reference.melanoma_threshold
        flags = float((melanoma_flags(expected, melanoma, threshold)
                       == melanoma_flags(got, melanoma, threshold)).mean())
    return {
        "test_set": str(test_dir),
        "n": len(expected),
        "taxonomy": float_result.report["taxonomy"],
        "top1_agreement": float((expected.argmax(1) == got.argmax(1)).mean()),
        "melanoma_flag_agreement": flags,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "melanoma_threshold": reference.melanoma_threshold,
        "float": _scores(float_result),
        "int8": _scores(int8_result),
    }


def judge(sets: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """The shipping rule: on every set, top-1 and flag agreement >= 98%, and balanced accuracy
    and melanoma AUC within 0.01 of the float model's. Returns (passes, one reason per check)."""
    if not sets:
        return False, ["no test set was compared"]
    reasons, passes = [], True

    def check(ok: bool, text: str) -> None:
        nonlocal passes
        passes = passes and ok
        reasons.append(f"{'ok' if ok else 'FAILS'}: {text}")

    for item in sets:
        name = Path(item["test_set"]).name
        for key, label in (("top1_agreement", "top-1 agreement"),
                           ("melanoma_flag_agreement", "melanoma-flag agreement")):
            value = item[key]
            if value is None:
                check(False, f"{name}: {label} undefined (no melanoma class)")
            else:
                check(value >= MIN_AGREEMENT, f"{name}: {label} {value:.1%} (needs >= {MIN_AGREEMENT:.0%}, "
                                              f"n={item['n']})")
        for key, label in (("balanced_accuracy", "balanced accuracy"), ("melanoma_auc", "melanoma AUC")):
            before, after = item["float"][key], item["int8"][key]
            if before is None or after is None:
                check(False, f"{name}: {label} undefined (no melanoma cases in the set?)")
                continue
            change = after - before
            check(abs(change) <= MAX_METRIC_CHANGE, f"{name}: {label} {before:.3f} -> {after:.3f} "
                                                    f"({change:+.3f}; needs within {MAX_METRIC_CHANGE})")
    return passes, reasons


def equivalence_report(reference: Classifier, candidate: Classifier, test_dirs: list[Path],
                       progress: Progress = no_progress) -> dict[str, Any]:
    """Compare on every test set and apply the rule: the content of int8_report.json."""
    sets = [compare_on(reference, candidate, Path(d), progress) for d in test_dirs]
    passes, reasons = judge(sets)
    return {
        "passes": passes,
        "reasons": reasons,
        "rule": {"min_agreement": MIN_AGREEMENT, "max_metric_change": MAX_METRIC_CHANGE},
        "float": str(reference.source),
        "int8": str(candidate.source),
        "sets": sets,
    }
