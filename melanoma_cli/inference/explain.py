"""Grad-CAM heat maps: which pixels moved a Keras model's score for a class (figure: utils/plots.py).

Grad-CAM (Selvaraju et al., 2017) weights the feature maps of a convolutional layer by the mean
gradient of a class score (the logit, before the softmax) over each map, sums them and keeps the
positive part. The layer defaults to the model's last convolution, found inside nested models
such as the 'backbone' layer. With test-time augmentation the maps of the 8 views are turned back
to the original orientation and averaged, as the probabilities are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from melanoma_cli.data.images import Unreadable, decode_many
from melanoma_cli.inference.prediction import Prediction, resolve_threshold, to_predictions
from melanoma_cli.runtime.classifier import Classifier
from melanoma_cli.runtime.default_model import default_model_dir
from melanoma_cli.runtime.keras_engine import KerasClassifier
from melanoma_cli.runtime.loading import load_classifier
from melanoma_cli.runtime.run_folder import ModelInfo, resolve_model_path
from melanoma_cli.runtime.tta import VIEW_COUNT, all_views, average_views, unview, with_tta
from melanoma_cli.utils.atomic import write_with
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.plots import gradcam_figure_png
from melanoma_cli.utils.progress import Progress, no_progress
from melanoma_cli.utils.tensorflow import import_keras, import_tensorflow


@dataclass(frozen=True)
class Explanation:
    """One image as the model saw it, its prediction, and a heat map per explained class."""

    image: np.ndarray  # (size, size, 3) uint8 model input
    prediction: Prediction
    heatmaps: dict[str, np.ndarray]  # class -> (size, size) float32 in [0, 1]; all 0: no positive evidence
    threshold: float | None  # the melanoma threshold the flag used (None: argmax)

    @property
    def blank_heatmaps(self) -> list[str]:
        """The classes whose heat map is blank: no region of the layer raised their score."""
        return [name for name, heatmap in self.heatmaps.items() if not heatmap.any()]


@dataclass
class Explainer:
    """A Keras model split at `layer`: inputs -> (that layer's feature maps, class logits, class
    probabilities)."""

    keras: KerasClassifier
    layer: str
    model: Any
    tta: bool = False

    @property
    def classifier(self) -> Classifier:
        """The classifier whose probabilities the explanations report."""
        return with_tta(self.keras, self.tta)


def _leaves(model: Any, keras: Any, chain: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(the nested models leading to a layer, the layer) for every layer, in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer, keras, (*chain, layer))
        else:
            yield chain, layer


def find_layer(network: Any, name: str | None = None) -> tuple[tuple, Any]:
    """The layer to explain, and the nested models that hold it: `name`, else the last convolution."""
    keras = import_keras()
    convolutions = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    leaves = list(_leaves(network, keras))
    if name is None:
        found = [leaf for leaf in leaves if isinstance(leaf[1], convolutions)]
        if not found:
            raise MelanomaError("the model has no convolutional layer to explain: choose one with --layer")
        return found[-1]
    found = [leaf for leaf in leaves if leaf[1].name == name]
    if not found:
        last = [layer.name for _, layer in leaves if isinstance(layer, convolutions)][-5:]
        raise MelanomaError(f"the model has no layer '{name}' (its last convolutions: {', '.join(last)})")
    chain, layer = found[0]
    if len(layer.output.shape) != 4:
        raise MelanomaError(f"layer '{name}' has no spatial feature maps to explain "
                            f"(output shape {tuple(layer.output.shape)})")
    return chain, layer


def _logits_layer(last: Any, keras: Any) -> Any:
    """A copy of the softmax output layer without its softmax (Grad-CAM explains class scores)."""
    config = {**last.get_config(), "activation": "linear", "name": f"{last.name}_logits"}
    copy = keras.layers.Dense.from_config(config)
    copy.build(last.input.shape)
    copy.set_weights(last.get_weights())
    return copy


def _split(model: Any, chain: tuple, layer: Any, keras: Any, outermost: bool) -> Any:
    """`model` with two outputs: `layer`'s feature maps and the model's own output; for the
    `outermost` model, whose last layer is a softmax Dense, the logits. The model holding `layer`
    may have any topology; the models above it, and the outermost, are chains of layers (as
    `build_model` and the backbones make them) and are called again layer by layer."""
    if not chain and not outermost:
        return keras.Model(model.inputs, [layer.output, model.outputs[0]])
    inputs = keras.Input(model.inputs[0].shape[1:], name="image")
    features, x = None, inputs
    layers = [each for each in model.layers if not isinstance(each, keras.layers.InputLayer)]
    for each in layers:
        if chain and each is chain[0]:
            features, x = _split(each, chain[1:], layer, keras, outermost=False)(x)
        elif outermost and each is layers[-1]:
            x = _logits_layer(each, keras)(x)
        else:
            x = each(x)
            if each is layer:
                features = x
    return keras.Model(inputs, [features, x])


def _flat_split(network: Any, target: Any, last: Any, inputs: Any, keras: Any) -> Any:
    """A network whose layer `target` is in its own graph (any topology; a shared-trunk ensemble
    included), in one pass: inputs -> (`target`'s feature maps, the logits that its softmax layer
    `last` takes, the network's probabilities)."""
    from melanoma_cli.models.shared_trunk import replay

    graph = replay(network, inputs)
    logits = _logits_layer(last, keras)(graph.inputs[last.name])
    return keras.Model(inputs, [graph.outputs[target.name], logits, graph.output])


def gradcam_model(network: Any, layer: str | None = None) -> tuple[str, Any]:
    """The name of the layer explained (`layer`, else the last convolution), and `network` split
    there: inputs -> (its feature maps, class logits, class probabilities). `network` must end in
    a softmax Dense, or be an ensemble whose fine-tuned member does: then the maps and logits are
    that member's (the linear probe has no trained feature maps) and the probabilities the
    ensemble's."""
    from melanoma_cli.models.ensemble import PROBE
    from melanoma_cli.models.shared_trunk import SHARED_ENSEMBLE, fine_tuned_member

    keras = import_keras()
    member = fine_tuned_member(network)
    last = member.layers[-1]
    if not isinstance(last, keras.layers.Dense) or last.get_config()["activation"] != "softmax":
        raise MelanomaError("the model does not end in a softmax layer: Grad-CAM needs its class scores")
    chain, target = find_layer(member, layer)
    inputs = keras.Input(network.inputs[0].shape[1:], name="image")
    if network.name == SHARED_ENSEMBLE or (member is network and not chain):  # one flat graph
        return target.name, _flat_split(network, target, last, inputs, keras)
    features, logits = _split(member, chain, target, keras, outermost=True)(inputs)
    probabilities = keras.layers.Softmax(name="member_probabilities")(logits)
    if member is not network:
        probabilities = keras.layers.Average(name="mean_probabilities")(
            [probabilities, network.get_layer(PROBE)(inputs)])
    return target.name, keras.Model(inputs, [features, logits, probabilities])


def load_explainer(model: Path | None, layer: str | None = None, tta: bool = False) -> Explainer:
    """The Keras engine of `model` (gradients need it), split at `layer` (default: last convolution)."""
    classifier = load_classifier(model, "keras")
    assert isinstance(classifier, KerasClassifier)
    with_tta(classifier, tta)  # refuses --tta for a model without a TTA threshold, before any work
    name, split = gradcam_model(classifier.network, layer)
    return Explainer(classifier, name, split, tta)


def _class_maps(explainer: Explainer, tape: Any, features: Any, logits: Any,
                targets: np.ndarray) -> np.ndarray:
    """Grad-CAM of class targets[i] for row i of the batch, each at the feature maps' resolution."""
    tf = import_tensorflow()
    with tape:
        score = tf.reduce_sum(tf.gather(logits, targets, axis=1, batch_dims=1))
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    if explainer.tta:  # rows are view-major: turn each view back before averaging
        count = len(maps) // VIEW_COUNT
        maps = average_views(np.concatenate([unview(maps[v * count:(v + 1) * count], v)
                                             for v in range(VIEW_COUNT)]))
    return maps


def _upsampled(heatmap: np.ndarray, size: int) -> np.ndarray:
    """A heat map stretched bilinearly to the image and scaled to [0, 1] (all zeros stays zeros)."""
    stretched = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F")
                           .resize((size, size), Image.Resampling.BILINEAR))
    top = float(stretched.max())
    return (stretched / top if top > 0 else np.zeros_like(stretched)).astype(np.float32)


def explain_images(explainer: Explainer, images: np.ndarray, paths: Sequence[Path], top_k: int = 3,
                   threshold: float | None = None) -> list[Explanation]:
    """Predictions and heat maps for a batch of model inputs: one map for the predicted class,
    and one for melanoma when melanoma is not the prediction."""
    tf = import_tensorflow()
    if len(images) == 0:
        return []
    classifier = explainer.classifier
    count = len(images)
    batch = all_views(images) if explainer.tta else images
    with tf.GradientTape(persistent=True) as tape:
        features, logits, probabilities = explainer.model(tf.convert_to_tensor(batch, tf.float32),
                                                          training=False)
    probabilities = probabilities.numpy()
    if explainer.tta:
        probabilities = average_views(probabilities)
    predictions = to_predictions(classifier, paths, probabilities, top_k, threshold)
    repeat = VIEW_COUNT if explainer.tta else 1
    predicted = probabilities.argmax(axis=1)
    maps = {"predicted": _class_maps(explainer, tape, features, logits, np.tile(predicted, repeat))}
    melanoma = classifier.melanoma_class
    if melanoma is not None and (predicted != classifier.classes.index(melanoma)).any():
        targets = np.full(count * repeat, classifier.classes.index(melanoma))
        maps["melanoma"] = _class_maps(explainer, tape, features, logits, targets)
    del tape
    size = classifier.image_size
    explanations = []
    for row, prediction in enumerate(predictions):
        heatmaps = {prediction.prediction: _upsampled(maps["predicted"][row], size)}
        if melanoma is not None and prediction.prediction != melanoma:
            heatmaps[melanoma] = _upsampled(maps["melanoma"][row], size)
        explanations.append(Explanation(images[row], prediction, heatmaps,
                                        resolve_threshold(classifier, threshold)))
    return explanations


def explain_files(explainer: Explainer, paths: Sequence[Path], batch_size: int = 8, top_k: int = 3,
                  threshold: float | None = None,
                  progress: Progress = no_progress) -> Iterator[Explanation | Unreadable]:
    """Explanations (or the reason a file could not be read), batch by batch.

    `batch_size` counts rows through the model: with TTA each image takes 8 (memory grows with
    the rows, since the gradients keep every activation).
    """
    progress("start", {"total": len(paths)})
    step = max(1, batch_size // VIEW_COUNT) if explainer.tta else batch_size
    for start in range(0, len(paths), step):
        chunk = paths[start:start + step]
        images, kept, unreadable = decode_many(chunk, explainer.keras.image_size)
        yield from unreadable
        yield from explain_images(explainer, images, [chunk[i] for i in kept], top_k, threshold)
        progress("batch", {"images": len(chunk)})


def flag_text(explanation: Explanation) -> str:
    """'MELANOMA FLAG: p(melanoma) 0.412 >= 0.243' and the like; '' for a model without melanoma."""
    prediction = explanation.prediction
    if prediction.melanoma_probability is None:
        return ""
    probability = f"p(melanoma) {prediction.melanoma_probability:.3f}"
    if explanation.threshold is None:
        rule = "melanoma is the most probable class" if prediction.melanoma_flag else \
            "melanoma is not the most probable class"
    else:
        rule = f"{'>=' if prediction.melanoma_flag else '<'} threshold {explanation.threshold:.3g}"
    return f"{'MELANOMA FLAG' if prediction.melanoma_flag else 'no melanoma flag'}: {probability} {rule}"


def render_png(explanation: Explanation) -> bytes:
    """The figure as PNG bytes: the image, each heat map over it, top classes and flag in the title."""
    ranked = ", ".join(f"{name} {p:.3f}" for name, p in explanation.prediction.top_k)
    return gradcam_figure_png(explanation.image, explanation.heatmaps, f"{ranked}\n{flag_text(explanation)}",
                              highlight=explanation.prediction.melanoma_flag)


def output_paths(paths: Sequence[Path], folder: Path) -> list[Path]:
    """'<name>_gradcam.png' in `folder` per input, numbered where names collide or would replace an input."""
    inputs = {os.path.realpath(path) for path in paths}
    chosen: list[Path] = []
    for path in paths:
        target, number = folder / f"{path.stem}_gradcam.png", 2
        while target in chosen or os.path.realpath(target) in inputs:
            target, number = folder / f"{path.stem}_gradcam-{number}.png", number + 1
        chosen.append(target)
    return chosen


def _recorded_sources(model: Path | None) -> list[Path]:
    """The training sources and holdout folders model.json records with absolute paths."""
    _, info_file = resolve_model_path(Path(model) if model is not None else default_model_dir())
    training = ModelInfo.load(info_file).training
    recorded = [source.get("path") for source in training.get("sources") or [] if isinstance(source, dict)]
    recorded += list(training.get("holdout_dirs") or [])
    return [Path(path) for path in recorded if isinstance(path, str) and Path(path).is_absolute()]


def prepare_output_dir(folder: Path, inputs: Sequence[str | Path] = (), model: Path | None = None) -> None:
    """Create the output folder (before any work), or a one-line error saying why it cannot be.

    Like a run folder, it is never inside an input folder or a training source of the model
    (figures there would be taken for lesion images by the next scan)."""
    target = Path(os.path.realpath(folder))
    folders = [(Path(p), "input folder") for p in inputs if Path(p).is_dir()]
    folders += [(p, "training source of the model") for p in _recorded_sources(model)]
    for source, what in folders:
        if target.is_relative_to(os.path.realpath(source)):
            raise MelanomaError(f"refusing to write the figures to '{folder}' inside {what} '{source}'")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MelanomaError(f"output folder '{folder}' cannot be created: {exc.strerror or exc}") from exc


def write_png(explanation: Explanation, path: Path) -> None:
    """Write the figure atomically."""
    png = render_png(explanation)
    try:
        write_with(path, lambda tmp: tmp.write_bytes(png))
    except OSError as exc:
        raise MelanomaError(f"'{path}' cannot be written: {exc.strerror or exc}") from exc
