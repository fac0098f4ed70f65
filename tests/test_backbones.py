"""The backbone registry: keras.applications families, offline errors, trainable stages."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest

from melanoma_cli.config import load_config
from melanoma_cli.models.build import build_model
from melanoma_cli.utils.errors import MelanomaError


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "mobilenet_v3_small"])
def test_keras_application_backbones_take_raw_pixels(backbone):
    config = load_config(None, [f"model.backbone={backbone}", "model.weights=none", "model.dense_units=0"])
    model = build_model(config.model, num_classes=3, image_size=64)
    probabilities = model.predict(np.full((1, 64, 64, 3), 200, np.float32), verbose=0)
    assert probabilities.shape == (1, 3)
    assert abs(float(probabilities.sum()) - 1) < 1e-5


def test_offline_imagenet_download_suggests_the_bundled_backbone(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", offline)
    config = load_config(None, ["model.backbone=mobilenet_v2", "model.weights=imagenet"])
    with pytest.raises(MelanomaError, match=r"needs internet.*efficientnet_lite0"):
        build_model(config.model, num_classes=3, image_size=96)


def test_missing_weights_file_names_it(tmp_path):
    config = load_config(None, ["model.backbone=efficientnet_lite0",
                                f"model.weights={tmp_path / 'nope.pth'}"])
    with pytest.raises(MelanomaError, match=r"nope\.pth' does not exist"):
        build_model(config.model, num_classes=3, image_size=32)


def test_top_layers_of_a_keras_application_can_be_unfrozen():
    from melanoma_cli.models.backbones.registry import set_trainable

    config = load_config(None, ["model.backbone=mobilenet_v3_small", "model.weights=none"])
    model = build_model(config.model, num_classes=3, image_size=64)
    backbone = model.get_layer("backbone")
    # the top weighted layers: expanded_conv_10_project, its _bn, conv_1, conv_1_bn (BatchNorm stays frozen)
    set_trainable(model, "mobilenet_v3_small", "3")
    assert [w.path for w in backbone.trainable_weights] == ["conv_1/kernel"]
    set_trainable(model, "mobilenet_v3_small", "4")
    assert sorted(w.path for w in backbone.trainable_weights) == [
        "conv_1/kernel", "expanded_conv_10_project/kernel"]
    set_trainable(model, "mobilenet_v3_small", "head")
    assert not backbone.trainable_weights
