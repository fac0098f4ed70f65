"""The ensemble in one pass: the frozen lower blocks computed once, feeding both members.

The fine-tuned EfficientNet-Lite0 trains only its top blocks (or none); every block below them
still holds the pretrained weights, so they compute exactly what the linear probe's frozen
backbone computes. `build_shared_ensemble` lays the fine-tuned network out flat (its own layers,
shared, not copied) and gives the probe the stage outputs it reads from those blocks; for the
stages the fine-tuning changed, the probe gets a frozen copy of just those blocks. Which blocks
are shared is decided by comparing weights with the pretrained backbone, not by trusting the
recipe: a block is shared only if it is bit for bit the pretrained one.

The saved graph keeps the members apart by name: the fine-tuned member ends in the layer
`probabilities` of the outer graph, the probe is the nested model `linear_probe`, and the
output layer `ensemble_probabilities` weighs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from melanoma_cli.config import ModelConfig
from melanoma_cli.models.ensemble import ENSEMBLE, PROBE
from melanoma_cli.utils.tensorflow import import_keras

SHARED_ENSEMBLE = "shared_trunk_ensemble"
FINE_TUNED_OUTPUT = "probabilities"
ENSEMBLE_OUTPUT = "ensemble_probabilities"
PROBE_BLOCKS = "frozen_blocks"
_HEAD_OUTPUT = "head_relu"  # the backbone's top feature map


@dataclass
class Replayed:
    """A network called layer by layer on new inputs: its output and each leaf layer's tensors."""

    output: Any
    outputs: dict[str, Any] = field(default_factory=dict)  # layer name -> its output tensor
    inputs: dict[str, Any] = field(default_factory=dict)  # layer name -> its input tensor(s)
    layers: dict[str, Any] = field(default_factory=dict)  # layer name -> the layer


def replay(network: Any, inputs: Any, expand: Sequence[str] = ("backbone",)) -> Replayed:
    """Call `network`'s layers (the same objects, weights shared) on `inputs` one by one, so that
    the nested models named in `expand` are laid out flat in the graph being built."""
    keras = import_keras()
    record = Replayed(None)

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(layer, keras.Model) and layer.name in expand:
            nested = layer._run_through_graph(args[0], operation_fn=lambda op: op, call_fn=call)
            return nested[0] if isinstance(nested, list) and len(nested) == 1 else nested
        record.inputs[layer.name] = args[0]
        outputs = layer(*args, **kwargs)
        record.outputs[layer.name], record.layers[layer.name] = outputs, layer
        return outputs

    record.output = network._run_through_graph(inputs, operation_fn=lambda op: op, call_fn=call)
    if isinstance(record.output, list) and len(record.output) == 1:
        record.output = record.output[0]
    return record


def _units() -> list[str]:
    """Lite0's layer-name prefixes in order: the stem, the 16 blocks, the head conv."""
    from melanoma_cli.models.backbones.efficientnet_lite0 import BLOCK_COUNT

    return ["stem", *(f"block{i}" for i in range(BLOCK_COUNT)), "head"]


def _unit_of(name: str) -> int:
    return _units().index(name.split("_")[0])


def first_changed_unit(layers: dict[str, Any], reference: Any) -> int:
    """Index in `_units()` of the first unit whose weights differ from `reference`'s (the
    pretrained backbone); the number of units when none does."""
    for index, unit in enumerate(_units()):
        for layer in reference.layers:
            if not layer.name.startswith(f"{unit}_") or not layer.weights:
                continue
            mine = layers[layer.name].get_weights()
            if any(not np.array_equal(a, b) for a, b in zip(mine, layer.get_weights(), strict=True)):
                return index
    return len(_units())


def _probe_reads(config: ModelConfig) -> list[str]:
    """The backbone layers whose pooled outputs the probe reads, in its features' order."""
    from melanoma_cli.models.backbones.efficientnet_lite0 import stage_output_layers

    stages = stage_output_layers() if config.linear_probe_features == "stages" else []
    return [*stages, _HEAD_OUTPUT]


def _cut_layer(reference: Any, unit: int) -> str:
    """The layer whose output enters unit `unit`: the last layer of the unit before it."""
    if unit == 0:
        return "stem_rescaling"
    prefix = f"{_units()[unit - 1]}_"
    return [layer.name for layer in reference.layers if layer.name.startswith(prefix)][-1]


def _probe_model(reference: Any, reads: list[str], shared: list[str], cut: str | None,
                 kernel: np.ndarray, bias: np.ndarray, shapes: dict[str, tuple]) -> Any:
    """The probe over the trunk: inputs are the shared maps it reads (and the map entering the
    frozen copy of the changed blocks, `cut`); pooled, concatenated, one softmax layer."""
    keras = import_keras()
    inputs = {name: keras.Input(shapes[name][1:], name=name) for name in [*shared, *([cut] if cut else [])]}
    maps = {name: inputs[name] for name in shared}
    copied = [name for name in reads if name not in shared]
    if copied:
        frozen = keras.Model(reference.get_layer(cut).output,
                             [reference.get_layer(name).output for name in copied], name=PROBE_BLOCKS)
        frozen.trainable = False
        outputs = frozen(inputs[cut])
        maps.update(zip(copied, outputs if isinstance(outputs, list) else [outputs], strict=True))
    if len(reads) == 1:
        features = keras.layers.GlobalAveragePooling2D(name="pool")(maps[reads[0]])
    else:
        pooled = [keras.layers.GlobalAveragePooling2D(name=f"pool_{i}")(maps[name])
                  for i, name in enumerate(reads)]
        features = keras.layers.Concatenate(name="pool")(pooled)
    head = keras.layers.Dense(kernel.shape[1], activation="softmax", name="probabilities", dtype="float32")
    outputs = head(features)
    head.set_weights([kernel, bias])
    probe = keras.Model(list(inputs.values()), outputs, name=PROBE)
    probe.trainable = False
    return probe


def build_shared_ensemble(fine_tuned: Any, kernel: np.ndarray, bias: np.ndarray, config: ModelConfig,
                          image_size: int, probe_weight: float = 0.5) -> Any:
    """One model computing (1 - probe_weight) * the fine-tuned network's probabilities +
    probe_weight * the linear probe's (`kernel`, `bias` over `config`'s frozen features), with
    the blocks that fine-tuning left pretrained computed once for both.

    `fine_tuned` is an EfficientNet-Lite0 network from `build_model`, or the fine-tuned member
    of a shared ensemble (`fine_tuned_member`).
    """
    from melanoma_cli.models.backbones.registry import build_backbone

    if config.backbone != "efficientnet_lite0":
        raise ValueError(f"a shared trunk needs model.backbone efficientnet_lite0, not {config.backbone!r}")
    if not 0.0 <= probe_weight <= 1.0:
        raise ValueError(f"probe_weight must be in [0, 1], got {probe_weight}")
    keras = import_keras()
    inputs = keras.Input((image_size, image_size, 3), name="image")
    network = replay(fine_tuned, inputs)
    reference = build_backbone(config.backbone, config.weights, image_size)
    changed = first_changed_unit(network.layers, reference)
    reads = _probe_reads(config)
    shared = [name for name in reads if _unit_of(name) < changed]
    cut = _cut_layer(reference, changed) if len(shared) < len(reads) else None
    taken = [*shared, *([cut] if cut else [])]  # the probe's inputs, in order
    shapes = {name: network.outputs[name].shape for name in taken}
    probe = _probe_model(reference, reads, shared, cut, kernel, bias, shapes)
    probe_probabilities = probe([network.outputs[name] for name in taken])
    fine_weighted = keras.layers.Rescaling(1.0 - probe_weight, name="fine_tuned_weight")(network.output)
    probe_weighted = keras.layers.Rescaling(probe_weight, name="linear_probe_weight")(probe_probabilities)
    outputs = keras.layers.Add(name=ENSEMBLE_OUTPUT)([fine_weighted, probe_weighted])
    return keras.Model(inputs, outputs, name=SHARED_ENSEMBLE)


def build_shipped_ensemble(fine_tuned: Any, kernel: np.ndarray, bias: np.ndarray, config: ModelConfig,
                           image_size: int) -> Any:
    """The ensemble a run ships: with a shared trunk on EfficientNet-Lite0, else two backbones."""
    from melanoma_cli.models.ensemble import build_ensemble, build_probe

    if config.backbone == "efficientnet_lite0":
        return build_shared_ensemble(fine_tuned, kernel, bias, config, image_size)
    return build_ensemble(fine_tuned, build_probe(config, image_size, kernel, bias))


def members_model(ensemble: Any) -> Any:
    """The shared ensemble with three outputs from one pass: the fine-tuned member's, the
    probe's and the ensemble's probabilities."""
    keras = import_keras()
    inputs = keras.Input(ensemble.inputs[0].shape[1:], name="image")
    network = replay(ensemble, inputs)
    return keras.Model(inputs, [network.outputs[FINE_TUNED_OUTPUT], network.outputs[PROBE], network.output])


def fine_tuned_member(network: Any) -> Any:
    """The fine-tuned member of an ensemble (of either layout) as a network of its own, image ->
    probabilities; any other network is its own."""
    keras = import_keras()
    if network.name == ENSEMBLE:
        return next(layer for layer in network.layers
                    if isinstance(layer, keras.Model) and layer.name != PROBE)
    if network.name != SHARED_ENSEMBLE:
        return network
    inputs = keras.Input(network.inputs[0].shape[1:], name="image")
    return keras.Model(inputs, replay(network, inputs).outputs[FINE_TUNED_OUTPUT], name="fine_tuned")


def probe_weights(network: Any) -> tuple[np.ndarray, np.ndarray]:
    """The linear probe's softmax kernel and bias inside an ensemble of either layout."""
    head = network.get_layer(PROBE).layers[-1]
    kernel, bias = head.get_weights()
    return kernel, bias


def share_trunk(network: Any, config: ModelConfig, image_size: int) -> Any:
    """The shared-trunk ensemble of the same two members as `network` (either layout), with the
    same weights and the same probe weight (a two-backbone ensemble's is 0.5)."""
    kernel, bias = probe_weights(network)
    weight = network.get_layer("linear_probe_weight").scale if network.name == SHARED_ENSEMBLE else 0.5
    return build_shared_ensemble(fine_tuned_member(network), kernel, bias, config, image_size, weight)
