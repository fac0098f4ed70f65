"""How much `melanoma adapt` buys at a clinic, by sample size: the learning curve.

A clinic is split into an adapt part and a report part (by case; default: Derm7pt and
benchmarks/derm7pt_parts.csv, selection / report). For each sample size n and each of several
random draws, n lesions of the adapt part (stratified by class, seeded) adapt the model exactly as
`melanoma adapt` does (training/adapt.py `adapt_head`), and the adapted model is scored on the
whole report part: melanoma AUC (95% bootstrap interval) and sensitivity / specificity at the
threshold set on the sample (95% Wilson intervals). The unadapted model is scored alike, with
its stored threshold, and so is the unlabelled alternative (the clinic's own feature mean and scale
in place of the archive's, no labels). Frozen features are computed once per image.

    python benchmarks/adapt_learning_curve.py [--model RUN] [--clinic PATH --parts CSV]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, emit

from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.data.images import decode_many
from melanoma_cli.data.parts import lesions, read_parts
from melanoma_cli.data.sources import list_source
from melanoma_cli.runtime.default_model import DEFAULT_MODEL_DIR
from melanoma_cli.runtime.run_folder import RunFolder
from melanoma_cli.stats.metrics import bootstrap_auc_interval, roc_auc, wilson_interval
from melanoma_cli.training.adapt import DEFAULT_PRIOR_STRENGTH, adapt_head, base_model, member_inputs
from melanoma_cli.training.linear_probe import ensemble_probabilities

DERM7PT = REPO.parent / "shared" / "data" / "derm7pt"
NAME = "adapt_learning_curve"


def _scores(labels: np.ndarray, probabilities: np.ndarray, melanoma: int, threshold: float) -> dict:
    positive, score = labels == melanoma, probabilities[:, melanoma]
    found, cleared = int((score[positive] >= threshold).sum()), int((score[~positive] < threshold).sum())
    positives, negatives = int(positive.sum()), int((~positive).sum())
    return {"auc": roc_auc(positive, score), "auc_ci95": bootstrap_auc_interval(positive, score),
            "sensitivity": found / positives, "sensitivity_ci95": wilson_interval(found, positives),
            "specificity": cleared / negatives, "specificity_ci95": wilson_interval(cleared, negatives),
            "threshold": threshold}


def _draw(units: list, n: int, seed: int) -> list:
    """n lesions, stratified by class (at least one per class with two or more), seeded."""
    from sklearn.model_selection import train_test_split

    labels = [unit[0].label for unit in units]
    counts = {label: labels.count(label) for label in labels}
    strata = [label if counts[label] * n / len(units) >= 1 else "rare" for label in labels]
    chosen, _ = train_test_split(units, train_size=n, random_state=seed, stratify=strata)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--clinic", type=Path, default=DERM7PT)
    parser.add_argument("--parts", type=Path, default=REPO / "benchmarks" / "derm7pt_parts.csv")
    parser.add_argument("--adapt-part", default="selection")
    parser.add_argument("--report-part", default="report")
    parser.add_argument("--lesion-pattern", default=r"^(.+?)(bis)?\.jpg$",
                        help="file-name pattern naming a lesion (as `melanoma split --lesion-pattern`)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--sensitivity", type=float, default=0.85)
    parser.add_argument("--prior-strength", type=float, default=DEFAULT_PRIOR_STRENGTH)
    args = parser.parse_args()

    base_dir, fine_tuned, info, prior, _ = base_model(args.model)
    config = load_config(RunFolder(base_dir).config)
    melanoma = info.classes.index(info.melanoma_class)
    parts = read_parts(args.parts)
    entries = [e for e in list_source(SourceConfig(path=str(args.clinic))).entries if e.label in info.classes]
    images, kept, failed = decode_many([e.path for e in entries], info.image_size)
    assert not failed, failed[:3]
    entries = [entries[k] for k in kept]
    features, member = member_inputs(config, fine_tuned, images)
    row_of = {e.path: k for k, e in enumerate(entries)}
    labels = np.array([info.classes.index(e.label) for e in entries])
    report = np.array([parts[e.path.name] == args.report_part for e in entries])
    adapt_entries = [e for e in entries if parts[e.path.name] == args.adapt_part]
    adapt_units = lesions(adapt_entries, args.lesion_pattern)
    common = {"clinic": str(args.clinic), "report_images": int(report.sum()),
              "report_melanomas": int((labels[report] == melanoma).sum())}

    unadapted = ensemble_probabilities(member[report], prior.probabilities(features[report]))
    emit(NAME, variant="unadapted", n=0, **common,
         **_scores(labels[report], unadapted, melanoma, info.melanoma_threshold))
    adapt_rows = np.array([row_of[e.path] for unit in adapt_units for e in unit])
    clinic_mean, clinic_scale = features[adapt_rows].mean(axis=0), features[adapt_rows].std(axis=0) + 1e-6
    aligned = (features[report] - clinic_mean) / clinic_scale * prior.feature_scale + prior.feature_mean
    aligned_probabilities = ensemble_probabilities(member[report], prior.probabilities(aligned))
    emit(NAME, variant="unlabelled_feature_statistics", n=len(adapt_rows), **common,
         auc=roc_auc(labels[report] == melanoma, aligned_probabilities[:, melanoma]))

    for n in args.sizes:
        results = []
        for draw in range(args.draws):
            rows = np.array([row_of[e.path] for unit in _draw(adapt_units, n, draw) for e in unit])
            adapted = adapt_head(features[rows], member[rows], labels[rows], prior, melanoma,
                                 sensitivity=args.sensitivity, strength=args.prior_strength, seed=draw)
            head_probabilities = adapted.head.probabilities(features[report])
            probabilities = ensemble_probabilities(member[report], head_probabilities)
            scores = _scores(labels[report], probabilities, melanoma, adapted.threshold)
            results.append(scores)
            emit(NAME, variant="adapted", n=n, draw=draw,
                 sample_melanomas=int((labels[rows] == melanoma).sum()), **common, **scores,
                 promised_sensitivity_ci95=adapted.promise["sensitivity"]["ci95"])
        keys = ("auc", "sensitivity", "specificity")
        summary = {key: float(np.mean([r[key] for r in results])) for key in keys}
        ranges = {f"{key}_range": [float(min(r[key] for r in results)), float(max(r[key] for r in results))]
                  for key in keys}
        emit(NAME, variant="adapted_mean", n=n, draws=args.draws, **common, **summary, **ranges)


if __name__ == "__main__":
    main()
