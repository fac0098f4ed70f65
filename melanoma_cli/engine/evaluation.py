"""Evaluating a classifier on a folder-per-class test set, and writing the report folder."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.data.images import Unreadable
from melanoma_cli.data.scan import DatasetScan, scan_dataset
from melanoma_cli.engine.metrics import BOOTSTRAP_RESAMPLES, evaluation_report, melanoma_flags
from melanoma_cli.engine.prediction import ProgressHook, classify_batches, resolve_threshold
from melanoma_cli.runtime.classifier import Classifier
from melanoma_cli.runtime.run_folder import ReportFolder, RunFolder
from melanoma_cli.utils.atomic import write_text, write_with
from melanoma_cli.utils.errors import MelanomaError


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

    def summary(self) -> dict[str, Any]:
        """The report with its provenance (what --json prints and metrics.json holds)."""
        return {
            **self.report,
            "model": str(self.model),
            "test_dir": str(self.test_dir),
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        }


def _class_indices(scan: DatasetScan, classes: list[str]) -> dict[str, int]:
    """Model output index of each test class folder; refuses classes the model does not know."""
    unknown = [name for name in scan.classes if name not in classes]
    if unknown:
        names = ", ".join(f"'{name}'" for name in unknown)
        raise MelanomaError(
            f"test folder '{scan.root}' has class folder(s) the model does not know: {names} "
            f"(model classes: {', '.join(classes)})"
        )
    return {name: classes.index(name) for name in scan.classes}


def evaluate_folder(
    classifier: Classifier,
    test_dir: Path,
    threshold: float | None = None,
    batch_size: int = 64,
    progress: ProgressHook | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> EvaluationResult:
    """Classify every readable image in test_dir/<class>/ and compute the full report.

    Class folders are matched to the model's classes by name; unreadable files are skipped.
    """
    report = progress or (lambda kind, values: None)
    test_dir = Path(test_dir)
    report("status", {"message": f"scanning {test_dir}"})
    scan = scan_dataset(test_dir)
    index_of = _class_indices(scan, classifier.classes)
    files = [image.path for image in scan.images]
    kept: list[int] = []
    rows: list[np.ndarray] = []
    skipped = list(scan.unreadable)
    for batch in classify_batches(classifier, files, batch_size, progress):
        kept.extend(batch.indices)
        rows.append(batch.probabilities)
        skipped.extend(batch.unreadable)
    if not kept:
        raise MelanomaError(f"test folder '{test_dir}' has no readable images")
    labels = np.array([index_of[scan.images[i].label] for i in kept], dtype=np.int64)
    probabilities = np.concatenate(rows)
    report("status", {"message": "computing metrics and bootstrap confidence intervals"})
    metrics = evaluation_report(labels, probabilities, classifier.classes,
                                classifier.melanoma_class, resolve_threshold(classifier, threshold),
                                resamples)
    return EvaluationResult(metrics, [files[i] for i in kept], labels, probabilities, skipped,
                            classifier.source, test_dir)


def _write_predictions(result: EvaluationResult, path: Path) -> None:
    classes = result.report["classes"]
    melanoma = result.report["melanoma"]
    flags = None
    if melanoma is not None:
        flags = melanoma_flags(result.probabilities, classes.index(melanoma["class"]),
                               melanoma["threshold"])

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "true", "predicted",
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
