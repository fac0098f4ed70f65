"""Mixed precision stays inside fine-tuning: the probe and the model that ships are float32.

The config refuses `train.mixed_precision` without a GPU, so these tests force the policy through
the distribution that `train` chooses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import make_dataset

from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.data.preparation import prepare_data
from melanoma_cli.models.saving import all_layers, load_network
from melanoma_cli.training import train as training
from melanoma_cli.training.linear_probe import LinearProbe, fit_probe, frozen_features
from melanoma_cli.utils.tensorflow import import_keras

PROBED = ["data.image_size=32", "data.batch_size=8", "model.backbone=efficientnet_lite0",
          "model.weights=imagenet", "model.dense_units=0", "model.linear_probe=true",
          "model.linear_probe_c=1.0", "train.epochs=1"]


@pytest.mark.slow
def test_mixed_precision_training_ships_a_float32_model_and_probe(tmp_path, monkeypatch):
    keras = import_keras()
    data = make_dataset(tmp_path / "data", per_class=6)
    config = load_config(None, PROBED)
    policies = []

    def mixed(config):  # as `choose` does on a GPU with train.mixed_precision: true
        distribution = choose(config)
        keras.mixed_precision.set_global_policy("mixed_float16")
        return dataclasses.replace(distribution, mixed_precision=True)

    def record_policy(kind, values):
        if kind == "epoch":
            policies.append(keras.mixed_precision.global_policy().name)

    choose = training.choose
    monkeypatch.setattr(training, "choose", mixed)
    result = training.train(config, [SourceConfig(str(data))], tmp_path / "run", progress=record_policy)
    assert policies == ["mixed_float16"]  # fine-tuning did run in mixed precision
    assert keras.mixed_precision.global_policy().name == "float32"  # and left no policy behind

    checkpoint = load_network(tmp_path / "run" / "last.keras")
    assert any(layer.dtype_policy.name == "mixed_float16" for layer in all_layers(checkpoint))
    shipped = load_network(tmp_path / "run" / "model.keras")
    assert {layer.dtype_policy.name for layer in all_layers(shipped)} == {"float32"}

    # the probe was fitted on float32 features: the same as fitting it here, in float32
    prepared = prepare_data(config, [SourceConfig(str(data))])
    features = frozen_features(config, prepared.train_images)
    expected = fit_probe(features, prepared.train_labels, 3, 1.0, False)
    probe = LinearProbe.load(tmp_path / "run" / "linear_probe.npz")
    np.testing.assert_allclose(probe.kernel, expected.kernel, rtol=1e-4, atol=1e-6)

    # and the float32 model that ships scores validation as the run reported
    probabilities = shipped.predict(np.asarray(prepared.val_images, np.float32), verbose=0)
    accuracy = float((probabilities.argmax(axis=1) == prepared.val_labels).mean())
    assert accuracy == pytest.approx(result.validation["accuracy"])
