"""Shared fixtures: tiny synthetic folder-per-class datasets made on the fly, a stand-in classifier."""

from __future__ import annotations

import hashlib
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("melanoma", "nevus", "vascular lesion")
COLOURS = {"melanoma": (60, 30, 20), "nevus": (170, 120, 90), "vascular lesion": (200, 40, 60)}


def lesion_image(label: str, index: int, size: int = 24) -> Image.Image:
    """A noisy disc on skin-coloured background, coloured by class: learnable in one epoch."""
    rng = np.random.default_rng(zlib.crc32(f"{label}:{index}".encode()))
    yy, xx = np.mgrid[:size, :size]
    radius = size * rng.uniform(0.25, 0.4)
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
    image = np.empty((size, size, 3), np.float64)
    image[:] = (225, 190, 170)
    image[disc] = COLOURS.get(label, (90, 90, 200))
    image += rng.normal(0, 12, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def make_dataset(root: Path, per_class: int = 8, classes=CLASSES, size: int = 24) -> Path:
    """Write `per_class` JPEGs for each class under root/<class>/."""
    for label in classes:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            lesion_image(label, i, size).save(folder / f"{label[:3]}_{i:03d}.jpg", quality=95)
    return root


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@dataclass
class FakeClassifier:
    """Gives class `favourite` probability 0.7 for every image; records its batch sizes."""

    classes: list[str]
    favourite: int = 0
    image_size: int = 16
    melanoma_class: str | None = "melanoma"
    melanoma_threshold: float | None = None
    melanoma_threshold_tta: float | None = None
    source: Path = Path("fake/model.keras")
    batches: list[int] = field(default_factory=list)

    def predict(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 3)
        self.batches.append(len(images))
        probabilities = np.full((len(images), len(self.classes)), 0.3 / (len(self.classes) - 1))
        probabilities[:, self.favourite] = 0.7
        return probabilities


TINY_OVERRIDES = [
    "data.image_size=24", "data.batch_size=8", "model.filters=[4, 8]", "model.dense_units=8",
    "train.epochs=1",
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A fresh 3-class dataset of 24x24 JPEGs."""
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained once per test session through the CLI (3 classes, 24 px)."""
    from typer.testing import CliRunner

    from melanoma_cli.cli import app

    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(root / "data", per_class=10)
    run_dir = root / "run"
    args = ["train", "--data", str(data), "--out", str(run_dir)]
    for override in [*TINY_OVERRIDES, "train.epochs=3"]:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture(scope="session")
def exported_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny trained run with its LiteRT export."""
    from melanoma_cli.inference.export import export_model

    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(trained_run, run)
    export_model(run)
    return run


NEEDS_A_TRAINED_MODEL = {"trained_run", "exported_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs a trained model is slow, like one marked so (fast tier: -m "not slow")."""
    for item in items:
        if NEEDS_A_TRAINED_MODEL & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
