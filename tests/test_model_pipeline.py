"""The tf.data pipeline and the configurable model."""

from __future__ import annotations

import numpy as np
import pytest

from melanoma_cli.config import AugmentConfig, load_config
from melanoma_cli.data.images import decode_many
from melanoma_cli.data.pipeline import (
    FusedAugmenter,
    apply_transforms,
    build_augmenter,
    make_dataset,
    transform_matrices,
)
from melanoma_cli.models.build import build_model


def test_pipeline_batches_float_images_and_one_hot_labels():
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    augmenter = build_augmenter(AugmentConfig(enabled=True), seed=1)
    dataset = make_dataset(images, labels, 3, 4, shuffle=True, augmenter=augmenter, seed=1)
    batches = list(dataset)
    assert [int(x.shape[0]) for x, _ in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype.name == "float32" and tuple(x.shape[1:]) == (16, 16, 3)
    assert y.shape == (4, 3) and np.allclose(np.asarray(y).sum(axis=1), 1)
    assert float(np.asarray(x).min()) >= 0 and float(np.asarray(x).max()) <= 255.5


def test_unaugmented_pipeline_keeps_order_and_values():
    images = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    (batch,) = list(make_dataset(images, None, 3, 8))
    assert np.array_equal(np.asarray(batch), images.astype(np.float32))


def augmented(images: np.ndarray, seed: int) -> np.ndarray:
    """One batch of `images` through a fresh default augmenter seeded with `seed`."""
    augmenter = build_augmenter(AugmentConfig(enabled=True), seed=seed)
    (batch,) = list(make_dataset(images, None, 3, len(images), augmenter=augmenter, seed=seed))
    return np.asarray(batch)


def test_augmenter_changes_images_and_its_seed_decides_how():
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    first, again, other = augmented(images, 1), augmented(images, 1), augmented(images, 2)
    changed = np.abs(first - images).reshape(len(images), -1).max(axis=1)
    assert (changed > 1).all(), changed  # every image was altered
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1


def test_augmenter_is_random_per_batch_and_reproducible_across_runs():
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)

    def two_epochs(seed: int) -> list[np.ndarray]:
        augmenter = build_augmenter(AugmentConfig(enabled=True, saturation=0.2, hue=0.05), seed=seed)
        dataset = make_dataset(images, None, 3, len(images), augmenter=augmenter, seed=seed)
        return [np.asarray(batch) for _ in range(2) for batch in dataset]

    first, again = two_epochs(3), two_epochs(3)
    assert np.abs(first[0] - first[1]).max() > 1  # a new draw every epoch
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(batch.dtype == np.float32 and batch.min() >= 0 and batch.max() <= 255 for batch in first)


def test_augmenter_with_everything_off_is_the_identity():
    off = AugmentConfig(enabled=True, flip=False, rotation=0, zoom=0, translation=0, contrast=0,
                        brightness=0, saturation=0, hue=0)
    assert build_augmenter(off, seed=1) is None
    images = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(FusedAugmenter(off, seed=1)(images)), images)


@pytest.mark.parametrize("interpolation", ["NEAREST", "BILINEAR"])
def test_fused_transform_flips_and_quarter_turns_match_numpy_exactly(interpolation):
    import tensorflow as tf

    images = np.random.default_rng(0).integers(0, 256, (4, 9, 9, 3)).astype(np.float32)
    ones = tf.ones([4])
    cases = {  # (flip_x, flip_y, turns) -> numpy's answer
        (-1.0, 1.0, 0.0): images[:, :, ::-1],
        (1.0, -1.0, 0.0): images[:, ::-1],
        (1.0, 1.0, 0.25): np.rot90(images, k=1, axes=(1, 2)),
        (1.0, 1.0, -0.25): np.rot90(images, k=-1, axes=(1, 2)),
        (1.0, 1.0, 0.5): np.rot90(images, k=2, axes=(1, 2)),
    }
    for (fx, fy, turns), expected in cases.items():
        matrices = transform_matrices(fx * ones, fy * ones, turns * 2 * np.pi * ones, ones,
                                      0 * ones, 0 * ones, 9, 9)
        got = np.asarray(apply_transforms(tf.constant(images), matrices, interpolation))
        np.testing.assert_array_equal(got, expected, err_msg=f"flip {fx},{fy} turns {turns}")


def test_decode_converts_modes_and_sizes(tmp_path):
    from PIL import Image

    paths = []
    for mode, name in [("L", "gray.png"), ("RGBA", "alpha.png"), ("I;16", "deep.png"),
                       ("CMYK", "print.jpg"), ("P", "palette.gif")]:
        image = Image.new(mode, (40, 30))
        image.save(tmp_path / name)
        paths.append(tmp_path / name)
    (tmp_path / "bad.jpg").write_text("no")
    images, kept, failures = decode_many([*paths, tmp_path / "bad.jpg"], 20)
    assert images.shape == (5, 20, 20, 3) and images.dtype == np.uint8
    assert kept == [0, 1, 2, 3, 4]
    assert [f.path.name for f in failures] == ["bad.jpg"]


@pytest.mark.parametrize(
    ("overrides", "convs", "norms", "pools", "dropouts", "dense"),
    [
        (["model.filters=[4]"], [4], 1, ["MaxPooling2D"], ["dense_dropout", "head_dropout"], [128, 4]),
        (["model.filters=[4, 8, 16]", "model.convs_per_block=2", "model.batch_norm=false"],
         [4, 4, 8, 8, 16, 16], 0, ["MaxPooling2D"] * 3, ["dense_dropout", "head_dropout"], [128, 4]),
        (["model.pooling=average", "model.block_dropout=0.2", "model.dense_units=0"],
         [32, 64, 128], 3, ["AveragePooling2D"] * 3,
         ["block0_dropout", "block1_dropout", "block2_dropout", "head_dropout"], [4]),
    ],
    ids=["one-block", "two-convs-no-batchnorm", "average-block-dropout-no-dense"],
)
def test_custom_cnn_variants_build_the_configured_layers(overrides, convs, norms, pools, dropouts, dense):
    model = build_model(load_config(None, overrides).model, num_classes=4, image_size=32)
    probabilities = model.predict(np.full((2, 32, 32, 3), 128, np.float32), verbose=0)
    assert probabilities.shape == (2, 4)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert [layer.filters for layer in model.layers if type(layer).__name__ == "Conv2D"] == convs
    assert kinds.count("BatchNormalization") == norms
    assert [kind for kind in kinds if kind in ("MaxPooling2D", "AveragePooling2D")] == pools
    assert [layer.name for layer in model.layers if type(layer).__name__ == "Dropout"] == dropouts
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == dense


def test_backbone_model_freezes_and_unfreezes_blocks():
    from melanoma_cli.models.backbones.registry import set_trainable

    config = load_config(None, ["model.backbone=efficientnet_lite0", "model.weights=none"])
    model = build_model(config.model, num_classes=3, image_size=32)
    backbone = model.get_layer("backbone")
    set_trainable(model, "efficientnet_lite0", "head")
    assert not backbone.trainable_weights
    set_trainable(model, "efficientnet_lite0", "2")
    trainable = {w.path.split("/")[0] for w in backbone.trainable_weights}
    assert trainable and all(name.startswith(("block14", "block15", "head")) for name in trainable)
    assert not any("bn" in w.path for w in backbone.trainable_weights)
    set_trainable(model, "efficientnet_lite0", "all")
    assert len(backbone.trainable_weights) == 49  # every conv kernel, no BatchNorm
