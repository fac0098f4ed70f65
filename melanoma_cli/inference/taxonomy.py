"""Scoring a model on a test set with coarser classes: merged classes sum their probabilities.

ISIC 2018 (HAM10000's taxonomy) has 7 classes where the model has 9: its AKIEC is actinic
keratosis or squamous cell carcinoma, and its BKL is both kinds of benign keratosis. A test
label of the form "A or B", where A and B are model classes, merges them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from melanoma_cli.utils.errors import MelanomaError

ISIC2018_MERGES = {
    "actinic keratosis or squamous cell carcinoma": ["actinic keratosis", "squamous cell carcinoma"],
    "pigmented benign keratosis": ["pigmented benign keratosis", "seborrheic keratosis"],
}
TAXONOMIES = {"isic2018": ISIC2018_MERGES}
TaxonomyChoice = Literal["auto", "none", "isic2018"]


@dataclass
class Taxonomy:
    """The report's classes, each the sum of one or more model outputs."""

    classes: list[str]
    members: list[list[int]]  # model output indices summed into each report class
    name: str | None = None

    def merge(self, probabilities: np.ndarray) -> np.ndarray:
        """Model probabilities (n, model classes) -> report probabilities (n, report classes)."""
        return np.stack([probabilities[:, m].sum(axis=1) for m in self.members], axis=1)

    def merged(self, model_classes: list[str]) -> dict[str, list[str]]:
        """Report classes that sum several model classes, with their members."""
        return {name: [model_classes[i] for i in members]
                for name, members in zip(self.classes, self.members, strict=True) if len(members) > 1}


def _merges(model_classes: list[str], labels: set[str], choice: TaxonomyChoice,
            custom: dict[str, list[str]]) -> tuple[dict[str, list[str]], str | None]:
    """Which report class takes which model classes, and the taxonomy's name if a named one."""
    merges: dict[str, list[str]] = {}
    name = None
    isic2018_label = any(label in ISIC2018_MERGES and label not in model_classes for label in labels)
    if choice == "isic2018" or (choice == "auto" and isic2018_label):
        name = "isic2018"
        merges.update({k: [c for c in v if c in model_classes] for k, v in ISIC2018_MERGES.items()})
    if choice != "none":
        for label in labels - set(model_classes) - set(merges):
            parts = [part.strip() for part in label.split(" or ")]
            if len(parts) > 1 and all(part in model_classes for part in parts):
                merges[label] = parts
    for target, members in custom.items():
        unknown = [m for m in members if m not in model_classes]
        if unknown:
            raise MelanomaError(f"--merge '{target}': {', '.join(repr(u) for u in unknown)} "
                                f"is not a model class (model classes: {', '.join(model_classes)})")
        merges[target] = members
    return merges, name


def resolve_taxonomy(model_classes: list[str], test_labels: set[str], has_unknown: str,
                     choice: TaxonomyChoice = "auto",
                     custom: dict[str, list[str]] | None = None) -> Taxonomy:
    """The report classes for a test set whose labels are `test_labels` (model order kept).

    `has_unknown` starts the error for labels no report class takes ("test folder 'T' has
    class folder(s)").
    """
    merges, name = _merges(model_classes, test_labels, choice, custom or {})
    owner = {member: target for target, members in merges.items() for member in members}
    classes: list[str] = []
    members: list[list[int]] = []
    for index, model_class in enumerate(model_classes):
        target = owner.get(model_class, model_class)
        if target not in classes:
            classes.append(target)
            members.append([])
        members[classes.index(target)].append(index)
    unknown = sorted(test_labels - set(classes))
    if unknown:
        names = ", ".join(f"'{label}'" for label in unknown)
        raise MelanomaError(f"{has_unknown} the model does not know: {names} "
                            f"(model classes: {', '.join(model_classes)})")
    return Taxonomy(classes, members, name)


def parse_merge(text: str) -> tuple[str, list[str]]:
    """A `--merge` argument: `TEST_CLASS=model class+model class`."""
    target, sep, members = text.partition("=")
    parts = [part.strip() for part in members.split("+") if part.strip()]
    if not sep or not target.strip() or len(parts) < 2:
        raise MelanomaError(f"--merge '{text}' is not of the form 'TEST CLASS=model class+model class'")
    return target.strip(), parts
