"""The linear probe on frozen features and the ensemble it makes with the fine-tuned network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import load_config
from melanoma_cli.data.images import decode_many
from melanoma_cli.models.backbones.efficientnet_lite0 import build_efficientnet_lite0, stage_output_layers
from melanoma_cli.models.build import build_model
from melanoma_cli.models.ensemble import build_ensemble, build_probe
from melanoma_cli.models.shared_trunk import SHARED_ENSEMBLE, fine_tuned_member
from melanoma_cli.training.linear_probe import LinearProbe, fit_probe, frozen_features
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.tensorflow import import_keras

runner = CliRunner()
LITE0 = ["model.backbone=efficientnet_lite0", "model.weights=imagenet", "model.dense_units=0"]


def _features(rows: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable-ish random features with very different scales per column."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % classes
    features = rng.normal(size=(rows, 6)) * [1, 10, 100, 0.1, 1, 5] + labels[:, None] * [1, 0, 20, 0, 0, 3]
    return features, labels


@pytest.mark.parametrize("classes", [2, 4])
def test_probe_gives_the_probabilities_of_scaled_logistic_regression(classes):
    features, labels = _features(80, classes)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, class_weight="balanced",
                                                                   max_iter=3000))
    expected = reference.fit(features, labels).predict_proba(features)
    probe = fit_probe(features, labels, classes, c=0.3, balanced=True)
    assert probe.kernel.shape == (6, classes) and probe.bias.shape == (classes,)
    np.testing.assert_allclose(probe.probabilities(features), expected, atol=1e-5)


def test_a_class_without_training_images_gets_no_probability(tmp_path):
    features, labels = _features(60, 3)
    probe = fit_probe(features, labels * 2, 5, c=1.0, balanced=False)  # classes 0, 2, 4 only
    probabilities = probe.probabilities(features)
    assert probabilities[:, [1, 3]].max() < 1e-9
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    probe.save(tmp_path / "probe.npz")
    again = LinearProbe.load(tmp_path / "probe.npz")
    np.testing.assert_array_equal(again.kernel, probe.kernel)
    np.testing.assert_array_equal(again.bias, probe.bias)
    (tmp_path / "probe.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(MelanomaError, match=r"linear probe '.*probe.npz' cannot be read"):
        LinearProbe.load(tmp_path / "probe.npz")


@pytest.mark.parametrize(("features_kind", "width"), [("top", 1280), ("stages", 2064)])
def test_keras_probe_and_ensemble_compute_what_the_parts_do(features_kind, width):
    import_keras().utils.set_random_seed(2)
    config = load_config(None, [*LITE0, "data.image_size=32", "data.batch_size=4",
                                f"model.linear_probe_features={features_kind}"])
    images = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    features = frozen_features(config, images)
    assert features.shape == (6, width)
    weights = fit_probe(features, np.arange(6) % 3, 3, c=1.0, balanced=True)
    probe = build_probe(config.model, 32, weights.kernel, weights.bias)
    probe_probabilities = probe.predict(images, verbose=0)
    np.testing.assert_allclose(probe_probabilities, weights.probabilities(features), atol=1e-4)
    network = build_model(config.model, num_classes=3, image_size=32)
    ensemble = build_ensemble(network, probe)
    expected = (network.predict(images, verbose=0) + probe_probabilities) / 2
    np.testing.assert_allclose(ensemble.predict(images, verbose=0), expected, atol=1e-5)
    assert fine_tuned_member(ensemble) is network and fine_tuned_member(network) is network


def test_stage_features_are_each_stage_pooled_then_the_top():
    keras = import_keras()
    images = np.random.default_rng(4).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    top = frozen_features(load_config(None, [*LITE0, "data.image_size=32"]), images)
    stages = frozen_features(load_config(None, [*LITE0, "data.image_size=32",
                                                "model.linear_probe_features=stages"]), images)
    backbone = build_efficientnet_lite0((32, 32, 3), weights="imagenet")
    maps = keras.Model(backbone.input, [backbone.get_layer(name).output for name in stage_output_layers()])
    pooled = [np.asarray(m).mean(axis=(1, 2)) for m in maps.predict(images.astype(np.float32), verbose=0)]
    assert [p.shape[1] for p in pooled] == [16, 24, 40, 80, 112, 192, 320]  # one per stage
    np.testing.assert_allclose(stages, np.concatenate([*pooled, top], axis=1), rtol=1e-4, atol=1e-5)


def test_features_stop_when_asked():
    config = load_config(None, [*LITE0, "data.image_size=32", "data.batch_size=2"])
    images = np.zeros((6, 32, 32, 3), np.uint8)
    done: list[int] = []
    assert frozen_features(config, images, stop=lambda: len(done) == 2, progress=done.append) is None
    assert done == [2, 4]


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.linear_probe=true"],
     "config key 'model.linear_probe' needs a pretrained backbone (model.backbone is 'none')"),
    (["model.linear_probe=true", "model.backbone=mobilenet", "model.linear_probe_features=stages"],
     "config key 'model.linear_probe_features' 'stages' needs model.backbone: efficientnet_lite0"),
])
def test_linear_probe_config_errors(tmp_path, overrides, message):
    data = make_dataset(tmp_path / "data", per_class=4)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run")]
    for override in overrides:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {message}"


@pytest.mark.slow
def test_trained_ensemble_predicts_explains_and_exports(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6, size=32)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run)]
    for override in [*LITE0, "data.image_size=32", "data.batch_size=8", "train.epochs=1",
                     "model.linear_probe=true", "model.linear_probe_features=stages",
                     "train.class_weights=true"]:
        args += ["--set", override]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["members"]) == {"fine_tuned", "linear_probe"}
    assert summary["training"]["linear_probe_seconds"] > 0
    assert (run / "linear_probe.npz").is_file()
    network = import_keras().models.load_model(run / "model.keras", compile=False)
    assert network.name == SHARED_ENSEMBLE
    # the checkpoint was chosen on the ensemble's validation scores (the model that ships), and the
    # fine-tuned member's own scores are logged beside them
    with (run / "history.csv").open() as handle:
        epoch = list(csv.DictReader(handle))[-1]
    validation = [row for row in csv.DictReader((run / "split.csv").open()) if row["side"] == "validation"]
    images, _, _ = decode_many([Path(row["path"]) for row in validation], 32)
    classes = json.loads((run / "model.json").read_text())["classes"]
    labels = np.array([classes.index(row["label"]) for row in validation])
    shipped = network.predict(images.astype(np.float32), verbose=0)
    assert float(epoch["val_balanced_accuracy"]) == pytest.approx(
        balanced_accuracy_score(labels, shipped.argmax(axis=1)), abs=1e-6)
    member = fine_tuned_member(network).predict(images.astype(np.float32), verbose=0)
    assert float(epoch["val_member_balanced_accuracy"]) == pytest.approx(
        balanced_accuracy_score(labels, member.argmax(axis=1)), abs=1e-6)
    shown = runner.invoke(app, [*args, "--overwrite"])  # the table shows both members beside the ensemble
    assert shown.exit_code == 0, shown.output
    assert all(heading in shown.stdout for heading in ("ensemble", "fine-tuned", "linear-probe"))

    images = sorted(Path(data).rglob("*.jpg"))[:4]
    predicted = runner.invoke(app, ["predict", *map(str, images), "--model", str(run), "--json"])
    assert predicted.exit_code == 0, predicted.output
    exported = runner.invoke(app, ["export", "--model", str(run)])
    assert exported.exit_code == 0, exported.output
    lite = runner.invoke(app, ["predict", *map(str, images), "--model", str(run / "model.tflite"), "--json"])
    assert lite.exit_code == 0, lite.output

    def probabilities(output: str) -> np.ndarray:
        return np.array([list(row["probabilities"].values()) for row in json.loads(output)])

    np.testing.assert_allclose(probabilities(lite.stdout), probabilities(predicted.stdout), atol=1e-3)
    explained = runner.invoke(app, ["explain", *map(str, images[:2]), "--model", str(run),
                                    "--out", str(tmp_path / "maps"), "--json"])
    assert explained.exit_code == 0, explained.output
    assert len(list((tmp_path / "maps").glob("*_gradcam.png"))) == 2
    explained_rows = json.loads(explained.stdout)["written"]
    first = json.loads(predicted.stdout)[:2]
    for row, reference in zip(explained_rows, first, strict=True):  # the ensemble's probabilities
        np.testing.assert_allclose(list(row["probabilities"].values()),
                                   list(reference["probabilities"].values()), atol=1e-4)
