"""Evaluating a classifier on a folder-per-class test set, and writing the report folder."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.data.images import Unreadable
from melanoma_cli.data.sources import SourceListing, list_source, parse_source
from melanoma_cli.inference.prediction import classify_batches, resolve_threshold
from melanoma_cli.inference.taxonomy import TaxonomyChoice, resolve_taxonomy
from melanoma_cli.runtime.classifier import Classifier
from melanoma_cli.runtime.run_folder import ReportFolder, RunFolder
from melanoma_cli.runtime.tta import uses_tta
from melanoma_cli.stats.metrics import BOOTSTRAP_RESAMPLES, evaluation_report, melanoma_flags
from melanoma_cli.utils.atomic import write_text, write_with
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.progress import Progress, no_progress


@dataclass
class EvaluationResult:
    """The report plus what it was computed from: one row per evaluated file."""

    report: dict
    paths: list[Path]
    labels: np.ndarray
    probabilities: np.ndarray
    skipped: list[Unreadable]
    model: Path
    test_dir: Path
    nested: list[Path] = field(default_factory=list)  # folders below class folders (ignored)
    outside_classes: list[Path] = field(default_factory=list)  # loose files in test_dir (ignored)
    model_probabilities: np.ndarray | None = None  # in the model's own classes, before any merging

    def summary(self) -> dict[str, Any]:
        """The report with its provenance (what --json prints and metrics.json holds)."""
        return {
            **self.report,
            "model": str(self.model),
            "test_dir": str(self.test_dir),
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        }


def _test_entries(test_dir: Path) -> tuple[SourceListing, str]:
    """The labelled files of a test set (folder per class, or labels CSV), and how to name it."""
    listing = list_source(parse_source(str(test_dir)))
    if listing.kind == "csv":
        return listing, f"test set '{test_dir}' has label(s)"
    return listing, f"test folder '{test_dir}' has class folder(s)"


def evaluate_folder(
    classifier: Classifier,
    test_dir: Path,
    threshold: float | None = None,
    batch_size: int = 64,
    progress: Progress = no_progress,
    resamples: int = BOOTSTRAP_RESAMPLES,
    taxonomy: TaxonomyChoice = "auto",
    merges: dict[str, list[str]] | None = None,
) -> EvaluationResult:
    """Classify every readable image of a test set and compute the full report.

    The test set is a folder per class or a labels CSV. Its labels are matched to the model's
    classes by name; coarser test classes sum the probabilities of the model classes they
    merge (see `taxonomy`). Unreadable files are skipped. The report records whether the
    classifier averages over test-time augmentation views ("tta").
    """
    test_dir = Path(test_dir)
    progress("status", {"message": f"reading {test_dir}"})
    listing, has_unknown = _test_entries(test_dir)
    classes = resolve_taxonomy(classifier.classes, {e.label for e in listing.entries}, has_unknown,
                               taxonomy, merges)
    files = [entry.path for entry in listing.entries]
    kept: list[int] = []
    rows: list[np.ndarray] = []
    skipped = list(listing.unreadable)
    for batch in classify_batches(classifier, files, batch_size, progress):
        kept.extend(batch.indices)
        rows.append(batch.probabilities)
        skipped.extend(batch.unreadable)
    if not kept:
        raise MelanomaError(f"test folder '{test_dir}' has no readable images")
    labels = np.array([classes.classes.index(listing.entries[i].label) for i in kept], dtype=np.int64)
    raw = np.concatenate(rows)
    probabilities = classes.merge(raw)
    progress("status", {"message": "computing metrics and bootstrap confidence intervals" if resamples
                        else "computing metrics"})
    melanoma = classifier.melanoma_class if classifier.melanoma_class in classes.classes else None
    metrics = evaluation_report(labels, probabilities, classes.classes, melanoma,
                                resolve_threshold(classifier, threshold), resamples)
    metrics["taxonomy"] = {"name": classes.name, "merged": classes.merged(classifier.classes)}
    metrics["tta"] = uses_tta(classifier)
    return EvaluationResult(metrics, [files[i] for i in kept], labels, probabilities, skipped,
                            classifier.source, test_dir, listing.nested, listing.loose, raw)


def _write_predictions(result: EvaluationResult, path: Path) -> None:
    classes = result.report["classes"]
    melanoma = result.report["melanoma"]
    flags = None
    if melanoma is not None:
        flags = melanoma_flags(result.probabilities, classes.index(melanoma["class"]),
                               melanoma["threshold"])

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", "true", "prediction",
                             *(["melanoma_flag"] if flags is not None else []), *classes])
            for row, file in enumerate(result.paths):
                probabilities = result.probabilities[row]
                writer.writerow([file, classes[result.labels[row]],
                                 classes[int(probabilities.argmax())],
                                 *([bool(flags[row])] if flags is not None else []),
                                 *(f"{p:.6f}" for p in probabilities)])

    write_with(path, write)


def prepare_report_dir(folder: Path, test_dir: Path) -> None:
    """Create the report folder, refusing the test folder and run folders (before any work)."""
    if Path(os.path.realpath(folder)).is_relative_to(os.path.realpath(test_dir)):  # no error on link loops
        raise MelanomaError(f"refusing to write the report into the test folder ('{folder}')")
    if RunFolder(folder).info.exists():
        raise MelanomaError(f"refusing to write the report into run folder '{folder}' "
                            "(it would replace the run's own metrics.json)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MelanomaError(f"report folder '{folder}' cannot be created: "
                            f"{exc.strerror or exc}") from exc


def write_report(result: EvaluationResult, folder: Path) -> None:
    """metrics.json, predictions.csv and confusion_matrix.png in `folder` (written atomically)."""
    from melanoma_cli.utils.plots import plot_confusion_matrix

    files = ReportFolder(folder)
    try:
        write_text(files.metrics, json.dumps(result.summary(), indent=2) + "\n")
        _write_predictions(result, files.predictions)
        plot_confusion_matrix(result.report["confusion_matrix"], result.report["classes"],
                              files.confusion_matrix)
    except OSError as exc:
        raise MelanomaError(f"report folder '{folder}' cannot be written: "
                            f"{exc.strerror or exc}") from exc
