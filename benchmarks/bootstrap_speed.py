"""Bootstrap intervals of the evaluation report: seconds per report, vectorised vs a loop.

On synthetic 9-class probabilities the size of the default model's validation split (1,953
images, the classes in its proportions), it times `evaluation_report` with 1,000 resamples
(stratified resampling, the AUCs of all resamples at once from ranks) against the 0.4.0 method
(uniform resampling, one `roc_curve` call per resample and class), both in this process, one
after the other: compare the ratio, not the seconds across machines.

    python benchmarks/bootstrap_speed.py [--n 1953] [--resamples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import emit

from melanoma_cli.stats.metrics import evaluation_report

CLASS_SHARE = [21, 78, 14, 281, 1284, 166, 58, 32, 19]  # the default model's validation split


def loop_of_roc_curves(y_true: np.ndarray, probabilities: np.ndarray, resamples: int) -> np.ndarray:
    """The 0.4.0 per-class AUC samples: uniform resamples, one roc_curve per resample and class."""
    from sklearn.metrics import auc, roc_curve

    indices = np.random.default_rng(0).integers(0, len(y_true), size=(resamples, len(y_true)))
    samples = np.full((resamples, probabilities.shape[1]), np.nan)
    for k in range(probabilities.shape[1]):
        for row, picked in enumerate(indices):
            positive = y_true[picked] == k
            if positive.any() and not positive.all():
                fpr, tpr, _ = roc_curve(positive, probabilities[picked, k])
                samples[row, k] = auc(fpr, tpr)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=sum(CLASS_SHARE))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    share = np.array(CLASS_SHARE) / sum(CLASS_SHARE)
    y_true = rng.choice(len(share), size=args.n, p=share)
    probabilities = rng.dirichlet(np.ones(len(share)), size=args.n)
    probabilities[np.arange(args.n), y_true] += 0.3
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    classes = [f"class {k}" for k in range(len(share))]
    vectorised, loop = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        evaluation_report(y_true, probabilities, classes, "class 3", None, args.resamples)
        vectorised.append(time.perf_counter() - started)
        started = time.perf_counter()
        loop_of_roc_curves(y_true, probabilities, args.resamples)
        loop.append(time.perf_counter() - started)
    emit("bootstrap_speed", n=args.n, resamples=args.resamples,
         report_seconds=round(min(vectorised), 3), loop_auc_seconds=round(min(loop), 3),
         speedup=round(min(loop) / min(vectorised), 1))


if __name__ == "__main__":
    main()
