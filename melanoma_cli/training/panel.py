"""The panel: other clinics' labelled sets that choose a run's checkpoint and melanoma threshold.

A recipe, checkpoint or threshold chosen on one set learns that set (its camera, its population).
With `data.panel`, every epoch is also scored on each panel set (melanoma AUC of the model that
ships), `train.monitor: panel_melanoma_auc` picks the checkpoint by their mean with the validation
split's, and the stored threshold is the lowest of the thresholds that reach the target
sensitivity on each of them: the promise holds on every member, not only on average. Panel images
are held out of training like `--holdout` folders. Their figures chose things, so reports call
them development figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from melanoma_cli.config import SourceConfig
from melanoma_cli.data.images import decode_many
from melanoma_cli.data.sources import list_sources
from melanoma_cli.stats.metrics import (
    bootstrap_auc_interval,
    roc_auc,
    threshold_for_sensitivity,
    wilson_interval,
)
from melanoma_cli.utils.errors import MelanomaError

VALIDATION = "validation"


@dataclass
class PanelSet:
    """One panel member, decoded: its images and which of them are melanomas."""

    name: str
    images: np.ndarray
    is_melanoma: np.ndarray
    probe: np.ndarray | None = None  # the linear probe's probabilities, fixed before epoch 1
    dataset: Any = None  # the images as a batched tf.data.Dataset


def panel_files(specs: Sequence[SourceConfig]) -> list:
    """Every image file of the panel sets (they are held out of training)."""
    return [entry.path for listing in list_sources(list(specs)) for entry in listing.entries] if specs else []


def load_panel(specs: Sequence[SourceConfig], melanoma: str, image_size: int) -> list[PanelSet]:
    """Decode each panel set; each needs melanomas and other lesions to score a melanoma flag."""
    members = []
    for listing in list_sources(list(specs)) if specs else []:
        images, kept, failures = decode_many([e.path for e in listing.entries], image_size)
        if failures:
            raise MelanomaError(f"panel set '{listing.name}': '{failures[0].path}' is unreadable "
                                f"({failures[0].reason})")
        is_melanoma = np.array([listing.entries[k].label == melanoma for k in kept], dtype=bool)
        if not is_melanoma.any() or is_melanoma.all():
            raise MelanomaError(f"panel set '{listing.name}' ({listing.root}) needs both '{melanoma}' and "
                                "other images to score the melanoma flag")
        members.append(PanelSet(listing.name, images, is_melanoma))
    return members


def epoch_scores(validation_melanoma: np.ndarray, validation_scores: np.ndarray,
                 members: Sequence[PanelSet], member_scores: Sequence[np.ndarray]) -> dict[str, float]:
    """val_melanoma_auc, panel_<name>_melanoma_auc and their mean, panel_melanoma_auc."""
    logs = {"val_melanoma_auc": roc_auc(validation_melanoma, validation_scores) or float("nan")}
    for member, scores in zip(members, member_scores, strict=True):
        logs[f"panel_{member.name}_melanoma_auc"] = roc_auc(member.is_melanoma, scores)
    logs["panel_melanoma_auc"] = float(np.mean(list(logs.values())))
    return logs


def panel_threshold(sets: dict[str, tuple[np.ndarray, np.ndarray]], sensitivity: float) -> float | None:
    """The lowest of the thresholds reaching `sensitivity` on each set (name -> (is melanoma, scores))."""
    thresholds = [threshold_for_sensitivity(positive, scores, sensitivity)
                  for positive, scores in sets.values()]
    found = [t for t in thresholds if t is not None]
    return min(found) if found else None


def panel_report(sets: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float | None,
                 sensitivity: float) -> dict[str, Any]:
    """Per set: size, melanoma AUC (95% bootstrap interval), the threshold it alone would need, and
    sensitivity / specificity at the stored threshold (95% Wilson intervals); and their means."""
    members = {}
    for name, (positive, scores) in sets.items():
        row: dict[str, Any] = {"n": len(positive), "melanomas": int(positive.sum()),
                               "melanoma_auc": roc_auc(positive, scores),
                               "melanoma_auc_ci": _bounds(bootstrap_auc_interval(positive, scores)),
                               "threshold_for_target": threshold_for_sensitivity(positive, scores,
                                                                                 sensitivity)}
        if threshold is not None:
            found = int((scores[positive] >= threshold).sum())
            cleared = int((scores[~positive] < threshold).sum())
            row |= {"sensitivity": found / positive.sum(),
                    "sensitivity_ci": _bounds(wilson_interval(found, int(positive.sum()))),
                    "specificity": cleared / (~positive).sum(),
                    "specificity_ci": _bounds(wilson_interval(cleared, int((~positive).sum())))}
        members[name] = row
    keys = [key for key in ("melanoma_auc", "sensitivity", "specificity")
            if all(key in row for row in members.values())]
    means = {key: float(np.mean([row[key] for row in members.values()])) for key in keys}
    return {"members": members, "mean": means, "target_sensitivity": sensitivity,
            "rule": "the stored threshold is the lowest of the members' thresholds for the target "
                    "sensitivity; these sets chose the checkpoint and the threshold (development figures)"}


def _bounds(interval: Any) -> list[float] | None:
    return None if interval is None else [float(interval[0]), float(interval[1])]
