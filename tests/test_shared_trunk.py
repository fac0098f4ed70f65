"""The ensemble with a shared trunk computes what the two-backbone ensemble does, in one pass."""

from __future__ import annotations

import numpy as np
import pytest

from melanoma_cli.config import load_config
from melanoma_cli.inference.explain import gradcam_model
from melanoma_cli.models.backbones.registry import set_trainable
from melanoma_cli.models.build import build_model
from melanoma_cli.models.ensemble import build_ensemble, build_probe
from melanoma_cli.models.saving import load_network
from melanoma_cli.models.shared_trunk import (
    PROBE_BLOCKS,
    SHARED_ENSEMBLE,
    build_shared_ensemble,
    fine_tuned_member,
    members_model,
    share_trunk,
)
from melanoma_cli.runtime.run_folder import save_model
from melanoma_cli.utils.tensorflow import import_keras

SIZE = 32
WIDTH = {"top": 1280, "stages": 2064}


def _members(features: str, trainable: str, color: str = "none", seed: int = 0):
    """A Lite0 network whose `trainable` layers moved away from ImageNet (as a fit moves them),
    a random probe's kernel and bias, and the config."""
    import_keras().utils.set_random_seed(seed)
    config = load_config(None, ["model.backbone=efficientnet_lite0", "model.weights=imagenet",
                                "model.dense_units=0", f"data.image_size={SIZE}",
                                f"model.linear_probe_features={features}", f"model.color_constancy={color}"])
    network = build_model(config.model, num_classes=3, image_size=SIZE)
    set_trainable(network, "efficientnet_lite0", trainable)
    rng = np.random.default_rng(seed)
    for weight in network.trainable_weights:
        weight.assign(weight.numpy() + rng.normal(0, 0.02, weight.shape).astype(np.float32))
    kernel = rng.normal(0, 0.05, (WIDTH[features], 3)).astype(np.float32)
    bias = rng.normal(0, 1, 3).astype(np.float32)
    return network, kernel, bias, config


def _images(count: int = 4) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (count, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize(("features", "trainable", "color", "copied"), [
    ("stages", "head", "none", False),         # nothing below the head trained: all shared
    ("stages", "3", "none", True),             # the top blocks are copied for the probe
    ("top", "6", "shades_of_gray", True),
    ("stages", "all", "none", True),           # everything trained: the probe gets a whole copy
])
def test_shared_trunk_gives_the_two_backbone_probabilities(tmp_path, features, trainable, color, copied):
    network, kernel, bias, config = _members(features, trainable, color)
    probe = build_probe(config.model, SIZE, kernel, bias)
    two_backbones = build_ensemble(network, probe)
    shared = build_shared_ensemble(network, kernel, bias, config.model, SIZE)
    images = _images()
    expected = two_backbones.predict(images, verbose=0)
    assert shared.name == SHARED_ENSEMBLE
    np.testing.assert_allclose(shared.predict(images, verbose=0), expected, atol=1e-5)
    blocks = [layer.name for layer in shared.get_layer("linear_probe").layers]
    assert (PROBE_BLOCKS in blocks) == copied
    assert (shared.count_params() < two_backbones.count_params()) == (trainable != "all")

    save_model(shared, tmp_path / "model.keras")  # saved and loaded, the members stay apart
    loaded = load_network(tmp_path / "model.keras")
    fine, probe_only, both = members_model(loaded).predict(images, verbose=0)
    np.testing.assert_allclose(fine, network.predict(images, verbose=0), atol=1e-5)
    np.testing.assert_allclose(probe_only, probe.predict(images, verbose=0), atol=1e-5)
    np.testing.assert_allclose(both, expected, atol=1e-5)
    np.testing.assert_allclose(fine_tuned_member(loaded).predict(images, verbose=0), fine, atol=1e-6)
    layer, split = gradcam_model(loaded)
    assert layer == "head_conv"
    maps, logits, probabilities = split.predict(images, verbose=0)
    assert maps.shape[-1] == 1280
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), fine, atol=1e-5)


def test_probe_weight_weighs_the_members_and_a_rebuild_keeps_it(tmp_path):
    network, kernel, bias, config = _members("stages", "2", seed=1)
    images = _images(3)
    shared = build_shared_ensemble(network, kernel, bias, config.model, SIZE, probe_weight=0.25)
    fine, probe_only, both = members_model(shared).predict(images, verbose=0)
    np.testing.assert_allclose(both, 0.75 * fine + 0.25 * probe_only, atol=1e-6)
    save_model(fine_tuned_member(shared), tmp_path / "member.keras")  # the flat member alone explains
    layer, split = gradcam_model(load_network(tmp_path / "member.keras"))
    assert layer == "head_conv"
    np.testing.assert_allclose(split.predict(images, verbose=0)[2], fine, atol=1e-5)
    rebuilt = share_trunk(shared, config.model, SIZE)
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), both, atol=1e-6)
    with pytest.raises(ValueError, match="probe_weight"):
        build_shared_ensemble(network, kernel, bias, config.model, SIZE, probe_weight=1.5)


def test_a_two_backbone_ensemble_is_rebuilt_with_its_own_weights():
    network, kernel, bias, config = _members("top", "4", seed=2)
    two_backbones = build_ensemble(network, build_probe(config.model, SIZE, kernel, bias))
    rebuilt = share_trunk(two_backbones, config.model, SIZE)
    images = _images(3)
    assert rebuilt.name == SHARED_ENSEMBLE
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), two_backbones.predict(images, verbose=0),
                               atol=1e-5)
