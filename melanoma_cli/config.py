"""Typed configuration loaded from YAML: unknown keys and wrong types are errors naming the key.

Each section is a pydantic model: strict types (no "5" for 5, no true for 1), ranges declared on
the fields, and no unknown keys. Validation errors become one `MelanomaError` line naming the key.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from melanoma_cli.models.backbones.registry import Backbone
from melanoma_cli.utils.errors import MelanomaError

BUNDLED_CONFIG_DIRS = (
    Path(__file__).parent / "configs",  # installed wheel
    Path(__file__).parent.parent / "configs",  # source checkout / editable install
)


class _Section(BaseModel):
    """A config section: strict types and no unknown keys."""

    model_config = ConfigDict(strict=True, extra="forbid")


class SourceConfig(_Section):
    """One training source: a folder per class, or images/ with a labels CSV (`labels.csv`)."""

    path: str
    name: str | None = None  # shown in reports; used by trust_sources and validation_source
    labels: str = "labels.csv"  # CSV sources: the labels file, relative to `path`
    images: str = "images"  # CSV sources: the image folder, relative to `path`
    file_column: str = "file"
    label_column: str = "label"
    group_column: str | None = "group"  # images of one lesion share a value (optional column)
    label_map: dict[str, str | None] = Field(default_factory=dict)  # CSV label -> class (null: skip)

    def __init__(self, path: str | None = None, /, **values: Any) -> None:
        """`SourceConfig("folder")` is `SourceConfig(path="folder")`."""
        if path is not None:
            values["path"] = path
        super().__init__(**values)


class DataConfig(_Section):
    """Where images come from and how they are split."""

    sources: list[SourceConfig] = Field(default_factory=list)  # --data adds to these
    image_size: int = Field(180, ge=16)
    validation_split: float = Field(0.2, gt=0, lt=1)
    validation_source: str | None = None  # a source that validates instead of a random split
    drop_conflicts: bool = True
    trust_sources: list[str] = Field(default_factory=list)  # their copy and label win, first listed first
    near_duplicate_distance: int | None = Field(4, ge=0, le=16)  # hash bits (null: exact copies only)
    holdout_dirs: list[str] = Field(default_factory=list)
    # other clinics' labelled sets that choose the checkpoint and the melanoma threshold with the
    # validation split (--panel adds to these); never trained on
    panel: list[SourceConfig] = Field(default_factory=list)
    batch_size: int = Field(32, ge=1)
    min_images_per_class: int = Field(2, ge=2)
    classes: list[str] | None = Field(None, min_length=2)  # expected class names (None: what the data has)
    cache: Literal["ram", "disk"] = "ram"  # decoded images in memory, or memory-mapped in a temp folder

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[str] | None) -> list[str] | None:
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError("must not repeat a name")
        return classes


class AugmentConfig(_Section):
    """On-the-fly augmentation of training batches: flips, rotation, zoom and translation fused
    into one projective transform per image, then per-image colour jitter (data/pipeline.py)."""

    enabled: bool = False
    flip: bool = True
    rotation: float = Field(0.5, ge=0, le=1)  # up to this fraction of a turn
    zoom: float = Field(0.1, ge=0, lt=1)
    translation: float = Field(0.0, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)
    brightness: float = Field(0.1, ge=0, lt=1)
    saturation: float = Field(0.0, ge=0, lt=1)  # random saturation change up to this fraction
    hue: float = Field(0.0, ge=0, le=0.5)  # random hue shift up to this fraction of the colour wheel


class RebalanceConfig(_Section):
    """Augmentor operations used by `melanoma rebalance` and the train-split rebalancing stage."""

    enabled: bool = False
    target: int | None = Field(None, ge=1)
    rotate_probability: float = Field(0.7, ge=0, le=1)
    max_rotation: int = Field(25, ge=0, le=25)  # degrees (Augmentor's limit)
    flip_probability: float = Field(0.5, ge=0, le=1)
    zoom_probability: float = Field(0.3, ge=0, le=1)
    max_zoom: float = Field(1.2, ge=1)  # 1: no zoom
    brightness_probability: float = Field(0.3, ge=0, le=1)
    max_brightness_change: float = Field(0.15, ge=0, le=1)
    contrast_probability: float = Field(0.3, ge=0, le=1)
    max_contrast_change: float = Field(0.15, ge=0, le=1)


class StageConfig(_Section):
    """One fine-tuning stage: which part of the model trains, for how long, at what rate."""

    epochs: int = Field(5, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    trainable: str = "all"  # 'head', 'all' or the number of top backbone blocks to train

    @field_validator("trainable")
    @classmethod
    def _known_part(cls, trainable: str) -> str:
        if trainable not in ("head", "all") and not trainable.isdigit():
            raise ValueError("must be 'head', 'all' or the number of top backbone blocks to train")
        return trainable


class ModelConfig(_Section):
    """The network: a custom CNN (`backbone: none`) or a pretrained backbone with a new head."""

    backbone: Literal["none", Backbone] = "none"
    weights: str = "none"
    color_constancy: Literal["none", "shades_of_gray"] = "none"  # inside the model: predict applies it too
    filters: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    convs_per_block: int = Field(1, ge=1)
    kernel_size: int = Field(3, ge=1)
    batch_norm: bool = True
    block_dropout: float = Field(0.0, ge=0, lt=1)
    pooling: Literal["max", "average"] = "max"
    dense_units: int = Field(128, ge=0)  # 0: no dense layer
    dropout: float = Field(0.5, ge=0, lt=1)
    # average with a logistic-regression head on the backbone's frozen pretrained features
    linear_probe: bool = False
    linear_probe_c: float = Field(0.01, gt=0)  # inverse L2 strength of that head (scikit-learn's C)
    # what it reads: the backbone's pooled output ("top"), or every stage's pooled output ("stages")
    linear_probe_features: Literal["top", "stages"] = "top"

    @field_validator("filters")
    @classmethod
    def _positive_filters(cls, filters: list[int]) -> list[int]:
        if not all(f > 0 for f in filters):
            raise ValueError("must be positive")
        return filters

    @field_validator("linear_probe")
    @classmethod
    def _probe_needs_backbone(cls, linear_probe: bool, info: ValidationInfo) -> bool:
        if linear_probe and info.data.get("backbone") == "none":
            raise ValueError("needs a pretrained backbone (model.backbone is 'none')")
        return linear_probe

    @field_validator("linear_probe_features")
    @classmethod
    def _stages_need_lite0(cls, features: str, info: ValidationInfo) -> str:
        if features == "stages" and info.data.get("backbone") != "efficientnet_lite0":
            raise ValueError("'stages' needs model.backbone: efficientnet_lite0")
        return features


class TrainConfig(_Section):
    """The optimisation: optimiser, schedule, loss options, early stopping and stages."""

    epochs: int = Field(20, ge=1)
    optimizer: Literal["adam", "adamw"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["constant", "cosine", "plateau"] = "constant"
    class_weights: bool = False
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # panel_melanoma_auc: mean melanoma AUC of the validation split and every data.panel set
    monitor: Literal["val_balanced_accuracy", "val_accuracy", "val_loss", "panel_melanoma_auc"] = (
        "val_balanced_accuracy")
    early_stopping_patience: int = Field(0, ge=0)
    stages: list[StageConfig] = Field(default_factory=list)
    melanoma_class: str = "melanoma"
    melanoma_sensitivity: float = Field(0.85, gt=0, le=1)
    # tf.distribute strategy: auto (mirrored over several GPUs, else none), none (one device),
    # mirrored (every local GPU), multi_worker (the machines in TF_CONFIG)
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    mixed_precision: bool = False  # float16 compute on GPUs (refused without one)


class Config(_Section):
    """The whole run configuration."""

    seed: int = Field(123, ge=0, le=2**32 - 1)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    rebalance: RebalanceConfig = Field(default_factory=RebalanceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_yaml(self) -> str:
        """The fully resolved config as YAML text."""
        return yaml.safe_dump(self.model_dump(), sort_keys=False)

    def fingerprint(self) -> str:
        """A short hash identifying this exact configuration."""
        text = json.dumps(self.model_dump(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# What a value of the wrong type was expected to be, by pydantic error type
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true/false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "none_required": "null",
}
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _key(loc: tuple[int | str, ...]) -> str:
    """('train', 'stages', 1, 'epochs') -> 'train.stages[1].epochs'."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _field_at(loc: tuple[int | str, ...]) -> tuple[Any, list[Any]]:
    """The annotation and constraints of the config key at `loc` (list items: the item type)."""
    annotation: Any = Config
    metadata: list[Any] = []
    for part in loc:
        if isinstance(part, str) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields[part]
            annotation, metadata = field.annotation, field.metadata
        else:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation, metadata = args[-1] if args else None, []
    return annotation, metadata


def _range(loc: tuple[int | str, ...]) -> str:
    """What the key's declared bounds allow, as `must be ...` text."""
    annotation, metadata = _field_at(loc)
    bound = {name: getattr(m, name) for m in metadata for name in ("ge", "gt", "le", "lt")
             if hasattr(m, name)}
    low = f"[{bound['ge']}" if "ge" in bound else f"({bound['gt']}" if "gt" in bound else None
    high = f"{bound['le']}]" if "le" in bound else f"{bound['lt']})" if "lt" in bound else None
    if low and high:
        text = f"in {low}, {high}"
    elif low == "(0":
        text = "positive"
    elif low:
        text = f"at least {bound['ge']}" if "ge" in bound else f"greater than {bound['gt']}"
    else:
        text = f"at most {bound['le']}" if "le" in bound else f"less than {bound.get('lt')}"
    nullable = type(None) in typing.get_args(annotation)
    return f"must be {text}" + (", or null" if nullable else "")


def _message(error: Any) -> str:
    """One pydantic error as the one-line message users see."""
    loc, kind = error["loc"], error["type"]
    if loc[-1:] == ("[key]",):  # a mapping's key (e.g. of label_map) of the wrong type: the mapping
        loc = loc[:-2]
    key = _key(loc)
    if kind in ("extra_forbidden", "invalid_key"):  # a key no section has (or not a string)
        parent, _ = _field_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1)
        prefix = _key(loc[:-1]) + "." if loc[:-1] else ""
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        return f"unknown config key '{prefix}{loc[-1]}'{hint}"
    if kind == "literal_error":
        return f"config key '{key}': expected one of {error['ctx']['expected']}, got {error['input']!r}"
    if kind in _EXPECTED:
        return f"config key '{key}': expected {_EXPECTED[kind]}, got {error['input']!r}"
    if kind in _BOUNDS:
        return f"config key '{key}' {_range(loc)}"
    if kind == "too_short":
        minimum = error["ctx"]["min_length"]
        return f"config key '{key}' " + ("must not be empty" if minimum == 1 else
                                         f"must have at least {minimum} entries")
    if kind == "value_error":
        return f"config key '{key}' {error['ctx']['error']}"
    if kind == "missing":
        return f"config key '{key}' is required"
    return f"config key '{key}': {error['msg']}"


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
    try:
        config = Config.model_validate(values)
    except ValidationError as exc:
        raise MelanomaError(_message(exc.errors(include_url=False)[0])) from exc
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
