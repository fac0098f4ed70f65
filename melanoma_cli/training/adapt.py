"""`adapt`: fit a trained model to one clinic from a small labelled sample of its images.

A model trained on the ISIC archive ranks melanomas well at another clinic but scores every lesion
there higher: the flag fires on most benign lesions. The frozen-feature head (the linear probe of
the ensemble) is refitted on the clinic's sample with the archive head as its prior
(`training/prior_head.py`: no archive image is needed), the ensemble is rebuilt with it, and the
melanoma threshold is set on the sample for a stated sensitivity. The threshold is set on
out-of-fold probabilities (each image scored by a head fitted without it), so the promise is not
read off images the head was fitted to; its 95% interval (Wilson) says how far it can be trusted
with this many melanomas. The result is an ordinary run folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.data.images import Unreadable
from melanoma_cli.data.seen import SeenImages
from melanoma_cli.runtime.run_folder import (
    ModelInfo,
    RunFolder,
    check_run_folder,
    load_model,
    prepare_run_folder,
    save_model,
)
from melanoma_cli.stats.metrics import threshold_for_sensitivity, wilson_interval
from melanoma_cli.training.linear_probe import LinearProbe, ensemble_probabilities, frozen_features
from melanoma_cli.training.prior_head import fit_towards
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.progress import Progress, no_progress

MIN_MELANOMAS = 5  # fewer cannot place a threshold for any sensitivity worth stating
MIN_OTHERS = 5
FOLDS = 5
DEFAULT_PRIOR_STRENGTH = 0.03


@dataclass
class AdaptResult:
    """What `adapt` hands back to the command line."""

    run_dir: Path
    record: dict[str, Any]
    skipped: list[Unreadable] = field(default_factory=list)


@dataclass
class _Sample:
    features: np.ndarray
    fine_tuned: np.ndarray  # the fine-tuned member's probabilities
    labels: np.ndarray
    counts: dict[str, int]
    skipped: list[Unreadable]
    images: list[Any]  # ImageFile facts (hashes), for the seen-images record


def base_model(model: Path) -> tuple[Path, Any, ModelInfo, LinearProbe, SeenImages | None]:
    """The run folder, fine-tuned member, model.json, probe and seen images of the model to adapt."""
    from melanoma_cli.models.shared_trunk import fine_tuned_member

    loaded = load_model(model)
    folder = RunFolder(loaded.path.parent)
    if not folder.linear_probe.is_file() or not folder.config.is_file():
        raise MelanomaError(f"model '{model}' cannot be adapted: it has no linear probe "
                            f"({folder.linear_probe.name}) and config.yaml beside it; adapt needs a model "
                            "trained with model.linear_probe: true")
    if loaded.info.melanoma_class not in loaded.info.classes:
        raise MelanomaError(f"model '{model}' has no melanoma class: there is no threshold to adapt")
    probe = LinearProbe.load(folder.linear_probe)
    if probe.feature_mean is None or probe.feature_scale is None:
        raise MelanomaError(f"linear probe '{folder.linear_probe}' lacks its feature statistics "
                            "(made by an older version): train the model again to adapt it")
    seen = SeenImages.load(folder.seen_images) if folder.seen_images.is_file() else None
    return folder.path, fine_tuned_member(loaded.model), loaded.info, probe, seen


def _read_sample(spec: SourceConfig, info: ModelInfo, seen: SeenImages | None, config: Any,
                 fine_tuned: Any, progress: Progress) -> _Sample:
    """Scan the sample (labels must be the model's classes), refuse copies of seen images, decode."""
    from melanoma_cli.data.scan import scan_sources

    scan = scan_sources([spec], info.classes, perceptual_hash=True, image_size=info.image_size)
    if not scan.images:
        raise MelanomaError(f"sample '{spec.path}' has no readable labelled image")
    unknown = sorted({image.label for image in scan.images} - set(info.classes))
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise MelanomaError(f"sample '{spec.path}' has label(s) not in the model's classes: {names} "
                            f"(classes: {', '.join(info.classes)})")
    if seen is not None:
        copies = seen.copies(scan.images)
        if copies:
            raise MelanomaError(f"sample '{spec.path}' holds {len(copies)} image(s) the model was trained "
                                f"or validated on (first: '{copies[0].path}'); adapt on the clinic's own "
                                "images only")
    labels = np.array([info.classes.index(image.label) for image in scan.images])
    counts = {name: int((labels == k).sum()) for k, name in enumerate(info.classes) if (labels == k).any()}
    melanoma = info.classes.index(info.melanoma_class)
    melanomas, others = int((labels == melanoma).sum()), int((labels != melanoma).sum())
    if melanomas < MIN_MELANOMAS or others < MIN_OTHERS:
        raise MelanomaError(f"sample '{spec.path}' has {melanomas} melanoma(s) and {others} other lesion(s): "
                            f"at least {MIN_MELANOMAS} of each are needed to set a threshold")
    images = scan.cache.array[[scan.rows[image.path] for image in scan.images]]
    progress("status", {"message": f"frozen features of {len(images)} sample images"})
    features, fine_tuned_probabilities = member_inputs(config, fine_tuned, images)
    return _Sample(features, fine_tuned_probabilities, labels, counts, list(scan.unreadable), scan.images)


def member_inputs(config: Any, fine_tuned: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What adapting needs of each image: its frozen features and the fine-tuned member's
    probabilities."""
    features = frozen_features(config, images)
    probabilities = fine_tuned.predict(images.astype(np.float32), verbose=0,
                                       batch_size=config.data.batch_size)
    return features, np.asarray(probabilities)


@dataclass(frozen=True)
class AdaptedHead:
    """The refitted head, the melanoma threshold set on the sample, and what it promises."""

    head: LinearProbe
    threshold: float
    promise: dict[str, Any]


def _out_of_fold(features: np.ndarray, fine_tuned: np.ndarray, labels: np.ndarray, prior: LinearProbe,
                 strength: float, seed: int) -> np.ndarray:
    """The adapted ensemble's probabilities of each sample image from a head fitted without it."""
    from sklearn.model_selection import StratifiedKFold

    probabilities = np.zeros_like(fine_tuned)
    classes, counts = np.unique(labels, return_counts=True)
    strata = np.where(np.isin(labels, classes[counts >= FOLDS]), labels, -1)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    for fit_rows, held_rows in folds.split(features, strata):
        head = fit_towards(prior, features[fit_rows], labels[fit_rows], strength, prior.feature_mean,
                           prior.feature_scale)
        probabilities[held_rows] = ensemble_probabilities(fine_tuned[held_rows],
                                                          head.probabilities(features[held_rows]))
    return probabilities


def adapt_head(features: np.ndarray, fine_tuned: np.ndarray, labels: np.ndarray, prior: LinearProbe,
               melanoma: int, *, sensitivity: float, strength: float, seed: int) -> AdaptedHead:
    """Refit the head on a sample's frozen `features` (with the fine-tuned member's probabilities
    and the `labels`), and set the melanoma threshold on its out-of-fold probabilities."""
    out_of_fold = _out_of_fold(features, fine_tuned, labels, prior, strength, seed)
    is_melanoma = labels == melanoma
    threshold = threshold_for_sensitivity(is_melanoma, out_of_fold[:, melanoma], sensitivity)
    head = fit_towards(prior, features, labels, strength, prior.feature_mean, prior.feature_scale)
    head = replace(head, feature_mean=prior.feature_mean, feature_scale=prior.feature_scale)
    promise = _promise(is_melanoma, out_of_fold[:, melanoma], threshold, sensitivity)
    return AdaptedHead(head, threshold, promise)


def _promise(labels: np.ndarray, scores: np.ndarray, threshold: float, sensitivity: float) -> dict[str, Any]:
    """Out-of-fold sensitivity and specificity at the threshold, with 95% Wilson intervals."""
    positive = labels
    found, missed = int((scores[positive] >= threshold).sum()), int((scores[positive] < threshold).sum())
    cleared = int((scores[~positive] < threshold).sum())
    negatives = int((~positive).sum())
    return {"target_sensitivity": sensitivity,
            "sensitivity": {"value": found / (found + missed), "ci95": wilson_interval(found, found + missed),
                            "n": found + missed},
            "specificity": {"value": cleared / negatives, "ci95": wilson_interval(cleared, negatives),
                            "n": negatives},
            "estimated_on": "the sample, out of fold"}


def adapt(sample: SourceConfig, model: Path, out: Path, *, sensitivity: float = 0.85,
          prior_strength: float = DEFAULT_PRIOR_STRENGTH, seed: int = 0, overwrite: bool = False,
          progress: Progress = no_progress) -> AdaptResult:
    """Adapt `model` to a clinic with a labelled `sample` of its images; write a run folder to `out`."""
    from melanoma_cli.models.shared_trunk import build_shipped_ensemble

    check_run_folder(out, overwrite)
    base_dir, fine_tuned, info, prior, seen = base_model(model)
    if Path(out).resolve() == base_dir.resolve():
        raise MelanomaError(f"--out '{out}' is the model being adapted; write the adapted model elsewhere")
    config = load_config(RunFolder(base_dir).config)
    progress("status", {"message": f"scanning and decoding the sample {sample.path}"})
    data = _read_sample(sample, info, seen, config, fine_tuned, progress)
    progress("status", {"message": "refitting the frozen-feature head, out of fold and on the whole sample"})
    adapted = adapt_head(data.features, data.fine_tuned, data.labels, prior,
                         info.classes.index(info.melanoma_class), sensitivity=sensitivity,
                         strength=prior_strength, seed=seed)
    head, threshold = adapted.head, adapted.threshold
    network = build_shipped_ensemble(fine_tuned, head.kernel, head.bias, config.model, info.image_size)

    record = {
        "base_model": str(base_dir), "base_threshold": info.melanoma_threshold,
        "sample": str(Path(sample.path).absolute()), "images": len(data.labels),
        "classes": data.counts, "prior_strength": prior_strength, "seed": seed,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "threshold": threshold, **adapted.promise,
    }
    prepare_run_folder(out, overwrite)
    folder = RunFolder(out)
    save_model(network, folder.model)
    head.save(folder.linear_probe)
    shutil.copyfile(RunFolder(base_dir).config, folder.config)
    seen_now = SeenImages.of(data.images)
    (seen.plus(seen_now) if seen is not None else seen_now).save(folder.seen_images)
    training = {**info.training, "adaptation": record}
    # the base model's TTA threshold and outside-set results describe another model: not carried over
    adapted_info = replace(info, melanoma_threshold=threshold, melanoma_threshold_tta=None, outside_sets=[],
                           training=training, exports={}, export_sha256={}, quantization={},
                           status="complete")
    adapted_info.save(folder.path)
    return AdaptResult(folder.path, record, data.skipped)
