"""One preprocessing entry point: PIL images and files become exactly what training feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import lesion_image
from PIL import Image

from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.data import images as images_module
from melanoma_cli.data.images import decode_many, open_image, to_model_input
from melanoma_cli.data.preparation import prepare_data

SIZE = 20


def _odd_dataset(root: Path, fmt: str, shape: tuple[int, int] = (48, 37)) -> list[Path]:
    """Two classes of non-square images (so the resize matters) of `shape`, saved as `fmt`."""
    paths = []
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            image = lesion_image(label, i, size=max(shape)).crop((0, 0, *shape))
            path = root / label / f"{label}{i}.{fmt}"
            image.save(path)
            paths.append(path)
    return paths


def _training_arrays(root: Path, *overrides: str) -> dict[Path, np.ndarray]:
    """What prepare_data feeds the model, by file."""
    config = load_config(None, [f"data.image_size={SIZE}", "data.validation_split=0.5", *overrides])
    data = prepare_data(config, [SourceConfig(str(root))])
    return {**dict(zip((f.path for f in data.split.train), data.train_images, strict=True)),
            **dict(zip((f.path for f in data.split.validation), data.val_images, strict=True))}


def test_a_pil_image_and_its_png_give_what_training_feeds(tmp_path):
    paths = _odd_dataset(tmp_path / "data", "png")
    training = _training_arrays(tmp_path / "data")
    predicted, kept, _ = decode_many(paths, SIZE)
    assert kept == list(range(len(paths)))
    for row, path in enumerate(paths):
        in_memory = lesion_image(path.parent.name, int(path.stem[1:]), size=48).crop((0, 0, 48, 37))
        from_pil = to_model_input(in_memory, SIZE)
        assert from_pil.shape == (SIZE, SIZE, 3) and from_pil.dtype == np.uint8
        assert np.array_equal(from_pil, to_model_input(path, SIZE))
        assert np.array_equal(from_pil, training[path])
        assert np.array_equal(from_pil, predicted[row])


def test_a_large_jpeg_takes_the_draft_decode_the_same_way_everywhere(tmp_path):
    # like real dermoscopy photos, more than twice the model size: decoded downscaled in the DCT
    paths = _odd_dataset(tmp_path / "data", "jpg", shape=(200, 150))
    training = _training_arrays(tmp_path / "data", "data.near_duplicate_distance=null")  # keep look-alikes
    predicted, kept, _ = decode_many(paths, SIZE)
    assert kept == list(range(len(paths)))
    for row, path in enumerate(paths):
        drafted = open_image(path.read_bytes(), draft_size=SIZE)
        assert drafted.size == (50, 38) and drafted.info["original_size"] == (200, 150)  # 1/4 scale
        with Image.open(path) as image:
            from_pil = to_model_input(image, SIZE)
        assert np.array_equal(from_pil, training[path])
        assert np.array_equal(from_pil, predicted[row])
        assert np.array_equal(from_pil, to_model_input(path, SIZE))
        with Image.open(path) as image:
            full = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        assert np.abs(from_pil.astype(int) - full).mean() < 4  # the same picture, not a crop or shift


def test_training_decodes_each_file_once(tmp_path, monkeypatch):
    paths = _odd_dataset(tmp_path / "data", "jpg")
    opened: list[str] = []
    real_open = images_module.Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(images_module.Image, "open", counting_open)
    assert len(_training_arrays(tmp_path / "data")) == len(paths)
    assert len(opened) == len(paths)
