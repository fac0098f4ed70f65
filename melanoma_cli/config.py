"""Typed configuration loaded from YAML: unknown keys and wrong types are errors naming the key."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from melanoma_cli.models.backbones.registry import Backbone
from melanoma_cli.utils.errors import MelanomaError

BUNDLED_CONFIG_DIRS = (
    Path(__file__).parent / "configs",  # installed wheel
    Path(__file__).parent.parent / "configs",  # source checkout / editable install
)


@dataclass
class SourceConfig:
    """One training source: a folder per class, or images/ with a labels CSV (`labels.csv`)."""

    path: str
    name: str | None = None  # shown in reports; used by trust_sources and validation_source
    labels: str = "labels.csv"  # CSV sources: the labels file, relative to `path`
    images: str = "images"  # CSV sources: the image folder, relative to `path`
    file_column: str = "file"
    label_column: str = "label"
    group_column: str | None = "group"  # images of one lesion share a value (optional column)
    label_map: dict[str, str | None] = field(default_factory=dict)  # CSV label -> class (null: skip)


@dataclass
class DataConfig:
    """Where images come from and how they are split."""

    sources: list[SourceConfig] = field(default_factory=list)  # --data adds to these
    image_size: int = 180
    validation_split: float = 0.2
    validation_source: str | None = None  # a source that validates instead of a random split
    drop_conflicts: bool = True
    trust_sources: list[str] = field(default_factory=list)  # their copy and label win, first listed first
    near_duplicate_distance: int | None = 4  # perceptual-hash bits (null: exact copies only)
    holdout_dirs: list[str] = field(default_factory=list)
    batch_size: int = 32
    min_images_per_class: int = 2
    classes: list[str] | None = None  # expected class folder names (None: whatever the data has)


@dataclass
class AugmentConfig:
    """On-the-fly augmentation of training batches: flips, rotation, zoom and translation fused
    into one projective transform per image, then per-image colour jitter (data/pipeline.py)."""

    enabled: bool = False
    flip: bool = True
    rotation: float = 0.5
    zoom: float = 0.1
    translation: float = 0.0
    contrast: float = 0.1
    brightness: float = 0.1
    saturation: float = 0.0  # random saturation change up to this fraction
    hue: float = 0.0  # random hue shift up to this fraction of the colour wheel


@dataclass
class RebalanceConfig:
    """Augmentor operations used by `melanoma rebalance` and the train-split rebalancing stage."""

    enabled: bool = False
    target: int | None = None
    rotate_probability: float = 0.7
    max_rotation: int = 25
    flip_probability: float = 0.5
    zoom_probability: float = 0.3
    max_zoom: float = 1.2
    brightness_probability: float = 0.3
    max_brightness_change: float = 0.15
    contrast_probability: float = 0.3
    max_contrast_change: float = 0.15


@dataclass
class StageConfig:
    """One fine-tuning stage: which part of the model trains, for how long, at what rate."""

    epochs: int = 5
    learning_rate: float = 1e-3
    trainable: str = "all"


@dataclass
class ModelConfig:
    """The network: a custom CNN (`backbone: none`) or a pretrained backbone with a new head."""

    backbone: Literal["none", Backbone] = "none"
    weights: str = "none"
    color_constancy: Literal["none", "shades_of_gray"] = "none"  # inside the model: predict applies it too
    filters: list[int] = field(default_factory=lambda: [32, 64, 128])
    convs_per_block: int = 1
    kernel_size: int = 3
    batch_norm: bool = True
    block_dropout: float = 0.0
    pooling: Literal["max", "average"] = "max"
    dense_units: int = 128
    dropout: float = 0.5
    # average with a logistic-regression head on the backbone's frozen pretrained features
    linear_probe: bool = False
    linear_probe_c: float = 0.01  # inverse L2 strength of that head (scikit-learn's C)
    # what it reads: the backbone's pooled output ("top"), or every stage's pooled output ("stages")
    linear_probe_features: Literal["top", "stages"] = "top"


@dataclass
class TrainConfig:
    """The optimisation: optimiser, schedule, loss options, early stopping and stages."""

    epochs: int = 20
    optimizer: Literal["adam", "adamw"] = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Literal["constant", "cosine", "plateau"] = "constant"
    class_weights: bool = False
    label_smoothing: float = 0.0
    monitor: Literal["val_balanced_accuracy", "val_accuracy", "val_loss"] = (
        "val_balanced_accuracy"
    )
    early_stopping_patience: int = 0
    stages: list[StageConfig] = field(default_factory=list)
    melanoma_class: str = "melanoma"
    melanoma_sensitivity: float = 0.85
    # tf.distribute strategy: auto (mirrored over several GPUs, else none), none (one device),
    # mirrored (every local GPU), multi_worker (the machines in TF_CONFIG)
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    mixed_precision: bool = False  # float16 compute on GPUs (refused without one)


@dataclass
class Config:
    """The whole run configuration."""

    seed: int = 123
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML/JSON-ready data."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The fully resolved config as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        """A short hash identifying this exact configuration."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is dict:
        return "a mapping"
    if origin is list:
        item = _type_name(typing.get_args(tp)[0]).removeprefix("an ").removeprefix("a ")
        return f"a list of {item}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, "null" if tp is type(None) else str(tp)
    )


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (types.UnionType, typing.Union):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except MelanomaError:
                continue
    elif origin is dict:
        if isinstance(value, dict):
            key_type, value_type = typing.get_args(tp)
            return {_convert(k, key_type, key): _convert(v, value_type, f"{key}.{k}")
                    for k, v in value.items()}
    elif origin is list:
        if isinstance(value, list):
            (item_type,) = typing.get_args(tp)
            return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, key)
    elif tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise MelanomaError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            raise MelanomaError(f"unknown config key '{key}'{hint}")
        kwargs[name] = _convert(value, hints[name], key)
    return cls(**kwargs)


def _check_ranges(config: Config) -> None:
    """Values that have the right type but make no sense."""
    checks = [
        (0 <= config.seed < 2**32, "seed", "must be in [0, 4294967295]"),
        (config.data.image_size >= 16, "data.image_size", "must be at least 16"),
        (0 < config.data.validation_split < 1, "data.validation_split", "must be in (0, 1)"),
        (config.data.batch_size >= 1, "data.batch_size", "must be at least 1"),
        (config.data.near_duplicate_distance is None or 0 <= config.data.near_duplicate_distance <= 16,
         "data.near_duplicate_distance", "must be in [0, 16] bits, or null"),
        (config.data.min_images_per_class >= 2, "data.min_images_per_class", "must be >= 2"),
        (len(config.model.filters) > 0, "model.filters", "must not be empty"),
        (all(f > 0 for f in config.model.filters), "model.filters", "must be positive"),
        (config.model.convs_per_block >= 1, "model.convs_per_block", "must be at least 1"),
        (config.model.kernel_size >= 1, "model.kernel_size", "must be at least 1"),
        (0 <= config.model.dropout < 1, "model.dropout", "must be in [0, 1)"),
        (0 <= config.model.block_dropout < 1, "model.block_dropout", "must be in [0, 1)"),
        (config.model.dense_units >= 0, "model.dense_units", "must be >= 0 (0: no dense layer)"),
        (not config.model.linear_probe or config.model.backbone != "none", "model.linear_probe",
         "needs a pretrained backbone (model.backbone is 'none')"),
        (config.model.linear_probe_c > 0, "model.linear_probe_c", "must be positive"),
        (config.model.linear_probe_features == "top" or config.model.backbone == "efficientnet_lite0",
         "model.linear_probe_features", "'stages' needs model.backbone: efficientnet_lite0"),
        (config.train.epochs >= 1, "train.epochs", "must be at least 1"),
        (config.train.learning_rate > 0, "train.learning_rate", "must be positive"),
        (config.train.weight_decay >= 0, "train.weight_decay", "must be >= 0"),
        (0 <= config.train.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)"),
        (config.train.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0"),
        (0 < config.train.melanoma_sensitivity <= 1, "train.melanoma_sensitivity", "must be in (0, 1]"),
        (config.rebalance.target is None or config.rebalance.target >= 1, "rebalance.target",
         "must be at least 1"),
        (0 <= config.augment.rotation <= 1, "augment.rotation", "must be in [0, 1] (turns)"),
        (0 <= config.augment.zoom < 1, "augment.zoom", "must be in [0, 1)"),
        (0 <= config.augment.translation < 1, "augment.translation", "must be in [0, 1)"),
        (0 <= config.augment.contrast < 1, "augment.contrast", "must be in [0, 1)"),
        (0 <= config.augment.brightness < 1, "augment.brightness", "must be in [0, 1)"),
        (0 <= config.augment.saturation < 1, "augment.saturation", "must be in [0, 1)"),
        (0 <= config.augment.hue <= 0.5, "augment.hue", "must be in [0, 0.5]"),
    ]
    rebalance = config.rebalance
    for name in ("rotate", "flip", "zoom", "brightness", "contrast"):
        checks.append((0 <= getattr(rebalance, f"{name}_probability") <= 1,
                       f"rebalance.{name}_probability", "must be in [0, 1]"))
    checks += [
        (0 <= rebalance.max_rotation <= 25, "rebalance.max_rotation",
         "must be in [0, 25] (degrees, Augmentor's limit)"),
        (rebalance.max_zoom >= 1, "rebalance.max_zoom", "must be at least 1 (1: no zoom)"),
        (0 <= rebalance.max_brightness_change <= 1, "rebalance.max_brightness_change",
         "must be in [0, 1]"),
        (0 <= rebalance.max_contrast_change <= 1, "rebalance.max_contrast_change",
         "must be in [0, 1]"),
    ]
    classes = config.data.classes
    if classes is not None:
        checks += [
            (len(classes) >= 2, "data.classes", "must name at least two classes"),
            (len(set(classes)) == len(classes), "data.classes", "must not repeat a name"),
        ]
    for i, stage in enumerate(config.train.stages):
        key = f"train.stages[{i}]"
        checks += [
            (stage.epochs >= 1, f"{key}.epochs", "must be at least 1"),
            (stage.learning_rate > 0, f"{key}.learning_rate", "must be positive"),
            (stage.trainable in ("head", "all") or stage.trainable.isdigit(), f"{key}.trainable",
             "must be 'head', 'all' or the number of top backbone blocks to train"),
        ]
    for ok, key, message in checks:
        if not ok:
            raise MelanomaError(f"config key '{key}' {message}")


def find_config(name: str | Path) -> Path:
    """Resolve a config path, or the name of a bundled config (`final.yaml`, `final`)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.exists():
        raise MelanomaError(f"config '{name}' is not a file")
    if len(path.parts) == 1:
        for folder in BUNDLED_CONFIG_DIRS:
            for candidate in (folder / path.name, folder / f"{path.name}.yaml"):
                if candidate.is_file():
                    return candidate
    bundled = ", ".join(bundled_config_names()) or "none"
    raise MelanomaError(f"config '{name}' not found (bundled configs: {bundled})")


def bundled_config_names() -> list[str]:
    """Names of the configs that ship with the package."""
    for folder in BUNDLED_CONFIG_DIRS:
        if folder.is_dir():
            return sorted(p.name for p in folder.glob("*.yaml"))
    return []


def _apply_override(values: dict[str, Any], override: str) -> None:
    """Apply one `a.b=value` override to the raw config mapping (value parsed as YAML)."""
    dotted, sep, text = override.partition("=")
    if not sep or not dotted.strip():
        raise MelanomaError(f"override '{override}' is not of the form key=value (e.g. train.epochs=5)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MelanomaError(f"override '{override}': value is not valid YAML") from exc
    *parents, leaf = dotted.strip().split(".")
    node = values
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MelanomaError(f"override '{override}': '{part}' is not a section")
        node = child
    node[leaf] = value


def parse_config(values: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a validated Config from a raw mapping plus `key=value` overrides."""
    values = copy.deepcopy(values)
    for override in overrides:
        _apply_override(values, override)
    config = _build(Config, values, "")
    _check_ranges(config)
    _refuse_ignored_epochs(config, overrides)
    return config


def _refuse_ignored_epochs(config: Config, overrides: list[str] | tuple[str, ...]) -> None:
    """`train.epochs` counts only without stages: overriding it beside them would be ignored."""
    if config.train.stages and any(o.partition("=")[0].strip() == "train.epochs" for o in overrides):
        raise MelanomaError(
            "override 'train.epochs' has no effect: this config trains in train.stages, each with "
            "its own epochs (override train.stages instead, e.g. "
            "train.stages='[{epochs: 1, learning_rate: 0.001, trainable: head}]')")


def load_config(name: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (path or bundled name; None: the defaults) and apply overrides."""
    values: Any = {}
    if name is not None:
        path = find_config(name)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
            if context and start and mark and start.line != mark.line:  # where the broken part began
                problem += f" ({context} at line {start.line + 1})"
            raise MelanomaError(f"config '{path}'{where}: {problem}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise MelanomaError(f"config '{path}' cannot be read: {exc}") from exc
        if not isinstance(values, dict):
            raise MelanomaError(f"config '{path}' must be a mapping of sections, not {type(values).__name__}")
    return parse_config(values, overrides)
