"""`melanoma explain`: Grad-CAM figures through the CLI, and the layer choice for every backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import load_config
from melanoma_cli.data.images import decode_many
from melanoma_cli.inference.explain import (
    Explainer,
    explain_images,
    gradcam_model,
    load_explainer,
    output_paths,
)
from melanoma_cli.models.backbones.registry import KERAS_APPLICATIONS
from melanoma_cli.models.build import build_model
from melanoma_cli.runtime.keras_engine import KerasClassifier
from melanoma_cli.runtime.loading import load_classifier
from melanoma_cli.utils.plots import gradcam_figure_size
from melanoma_cli.utils.tensorflow import import_keras, import_tensorflow

runner = CliRunner()


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two readable lesions per class and one file that is not an image."""
    folder = make_dataset(tmp_path_factory.mktemp("explain") / "images", per_class=2, size=40)
    (folder / "nevus" / "broken.jpg").write_bytes(b"not an image")
    return folder


def test_explain_writes_one_figure_per_readable_image(trained_run, lesions, tmp_path):
    out = tmp_path / "figures"
    result = runner.invoke(app, ["explain", str(lesions), "--out", str(out), "--model", str(trained_run),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable file(s)" in result.stderr and "broken.jpg" in result.stderr
    report = json.loads(result.stdout)
    assert report["layer"] == "block1_conv0" and report["tta"] is False  # the CNN's last convolution
    assert [row["path"] for row in report["skipped"]] == [str(lesions / "nevus" / "broken.jpg")]
    readable = sorted(set(lesions.rglob("*.jpg")) - {lesions / "nevus" / "broken.jpg"})
    assert sorted(Path(row["path"]) for row in report["written"]) == readable
    assert sorted(out.iterdir()) == sorted(Path(row["figure"]) for row in report["written"])
    predictions = {row["path"]: row["probabilities"] for row in
                   json.loads(runner.invoke(app, ["predict", str(lesions), "--model", str(trained_run),
                                                  "--engine", "keras", "--json"]).stdout)}
    for row in report["written"]:
        expected = [row["prediction"]] + (["melanoma"] if row["prediction"] != "melanoma" else [])
        assert row["heatmaps"] == expected and set(row["blank_heatmaps"]) <= set(expected)
        assert row["probabilities"] == pytest.approx(predictions[row["path"]], abs=1e-5)
        with Image.open(row["figure"]) as figure:
            assert figure.format == "PNG" and figure.size == gradcam_figure_size(1 + len(expected))


def test_blank_heat_maps_are_named_in_the_json(trained_run, lesions, tmp_path, monkeypatch):
    """A layer whose maps come out blank for a class (no region raised its score) says so."""
    from melanoma_cli.inference import explain as explain_module

    real = explain_module._upsampled
    monkeypatch.setattr(explain_module, "_upsampled",  # as if no region raised any class's score
                        lambda heatmap, size: real(np.zeros_like(heatmap), size))
    result = runner.invoke(app, ["explain", str(lesions / "melanoma"), "--out", str(tmp_path / "f"),
                                 "--model", str(trained_run), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["written"]
    assert rows and all(row["blank_heatmaps"] == row["heatmaps"] for row in rows)
    assert f"{len(rows)} of {len(rows)} figure(s) have a blank heat map" in " ".join(result.stderr.split())


def test_output_inside_an_input_folder_or_a_training_source_is_refused(trained_run, lesions, tmp_path):
    import yaml

    sources = yaml.safe_load((trained_run / "config.yaml").read_text())["data"]["sources"]
    recorded = json.loads((trained_run / "model.json").read_text())["training"]["sources"]
    training_data = Path(recorded[0]["path"])
    assert sources == [] and training_data.is_dir()
    image = next((lesions / "melanoma").glob("*.jpg"))
    for out, what, folder in ((lesions / "figures", "input folder", lesions),
                              (training_data / "melanoma" / "figures", "training source of the model",
                               training_data)):
        result = runner.invoke(app, ["explain", str(lesions if folder == lesions else image),
                                     "--out", str(out), "--model", str(trained_run)])
        assert result.exit_code == 1, result.output
        assert result.stderr.strip() == (f"Error: refusing to write the figures to '{out}' inside "
                                         f"{what} '{folder}'")
        assert not out.exists()


def reference_gradcam(explainer: Explainer, image: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM written out for one image and class (Selvaraju et al. 2017): the feature maps
    weighted by the spatial mean of the class logit's gradient, ReLU, stretched to the image
    with TensorFlow's bilinear resize and scaled to a maximum of 1."""
    tf = import_tensorflow()
    with tf.GradientTape() as tape:
        features, logits, _ = explainer.model(image[None].astype(np.float32), training=False)
        score = logits[0, class_index]
    gradients = tape.gradient(score, features)[0].numpy()
    cam = np.maximum((features[0].numpy() * gradients.mean(axis=(0, 1))).sum(axis=-1), 0)
    size = image.shape[0]
    stretched = tf.image.resize(cam[..., None], (size, size), method="bilinear").numpy()[..., 0]
    return stretched / stretched.max() if stretched.max() > 0 else stretched


@pytest.mark.slow
def test_heat_maps_are_grad_cam_of_the_predicted_class_and_melanoma(trained_run, lesions):
    explainer = load_explainer(trained_run)
    files = sorted(lesions.rglob("*_00*.jpg"))
    images = decode_many(files, explainer.keras.image_size)[0]
    explanations = explain_images(explainer, images, files)  # one batch: rows must not mix
    assert len(explanations) == len(files)
    classes = explainer.keras.classes
    for image, item in zip(images, explanations, strict=True):
        assert set(item.heatmaps) == {item.prediction.prediction, "melanoma"}
        for name, heatmap in item.heatmaps.items():
            assert heatmap.shape == (24, 24) and heatmap.dtype == np.float32
            expected = reference_gradcam(explainer, image, classes.index(name))
            np.testing.assert_allclose(heatmap, expected, atol=2e-3, err_msg=f"{item.prediction.path} {name}")
        winner = item.heatmaps[item.prediction.prediction]
        assert winner.max() == pytest.approx(1.0) and winner.std() > 0.01  # evidence is somewhere


def test_explain_with_tta_reports_the_averaged_probabilities(trained_run, lesions, tmp_path):
    one = lesions / "melanoma" / "mel_000.jpg"
    result = runner.invoke(app, ["explain", str(one), "--out", str(tmp_path), "--model", str(trained_run),
                                 "--tta", "--layer", "block0_conv0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tta"] is True and report["layer"] == "block0_conv0"
    classifier = load_classifier(trained_run, "keras", tta=True)
    expected = classifier.predict(decode_many([one], classifier.image_size)[0])[0]
    assert list(report["written"][0]["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-5)
    assert f"p >= {classifier.melanoma_threshold:.3g}" in result.stderr  # the TTA threshold flags
    assert report["written"][0]["melanoma_flag"] == bool(
        expected[classifier.classes.index("melanoma")] >= classifier.melanoma_threshold)
    plain = load_classifier(trained_run, "keras").predict(decode_many([one], classifier.image_size)[0])[0]
    assert not np.allclose(expected, plain, atol=1e-4)


@pytest.mark.parametrize(("layer", "message"), [
    ("nope", "has no layer 'nope' (its last convolutions: block0_conv0, block1_conv0)"),
    ("dense", "layer 'dense' has no spatial feature maps"),
])
def test_bad_layer_is_a_one_line_error(trained_run, lesions, tmp_path, layer, message):
    result = runner.invoke(app, ["explain", str(lesions), "--out", str(tmp_path), "--model", str(trained_run),
                                 "--layer", layer])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_litert_only_model_is_refused(exported_run, lesions, tmp_path):
    result = runner.invoke(app, ["explain", str(lesions), "--out", str(tmp_path / "x"),
                                 "--model", str(exported_run / "model.tflite")])
    assert result.exit_code == 1 and "needs a .keras model" in result.stderr


def test_output_names_never_collide_nor_replace_an_input(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "x_gradcam.png"]
    assert [p.name for p in output_paths(paths, tmp_path)] == [
        "x_gradcam-2.png", "x_gradcam-3.png", "x_gradcam_gradcam.png"]


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", *KERAS_APPLICATIONS])
def test_every_backbone_is_explained_at_its_last_convolution(backbone):
    import_keras().utils.set_random_seed(1)  # untrained weights, the same every run
    config = load_config(None, [f"model.backbone={backbone}", "model.weights=none",
                                "model.color_constancy=shades_of_gray"])
    network = build_model(config.model, num_classes=3, image_size=96)
    name, split = gradcam_model(network)
    nested = network.get_layer("backbone")
    assert name in {layer.name for layer in nested._flatten_layers()}  # found inside the backbone
    images = np.random.default_rng(1).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    features, logits, probabilities = split(images.astype(np.float32), training=False)
    assert features.shape[1:3] == (3, 3)
    from_logits = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(from_logits, network.predict(images, verbose=0), atol=1e-5)
    np.testing.assert_allclose(probabilities, from_logits, atol=1e-6)
    classifier = KerasClassifier(network=network, classes=["melanoma", "nevus", "other"], image_size=96,
                                 melanoma_class="melanoma", melanoma_threshold=None, source=Path("m"))
    explanations = explain_images(Explainer(classifier, name, split), images, [Path(c) for c in "abcd"])
    # untrained weights may leave no positive evidence for a class in one image, not in all
    assert any(item.heatmaps[item.prediction.prediction].std() > 0 for item in explanations)
