"""Config loading: bundled lookup, overrides, and one-line errors naming the key."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
import yaml

from melanoma_cli.config import bundled_config_names, find_config, load_config
from melanoma_cli.utils.errors import MelanomaError

BUNDLED = ("baseline.yaml", "augmented.yaml", "final.yaml")


@pytest.mark.parametrize(("name", "augment", "rebalance", "backbone", "stages"), [
    ("baseline.yaml", False, False, "none", []),
    ("augmented.yaml", True, False, "none", []),
    ("final.yaml", True, False, "efficientnet_lite0", [(2, "head"), (6, "6")]),
])
def test_bundled_configs_load_from_any_directory(name, augment, rebalance, backbone, stages, tmp_path,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(name)
    assert (config.augment.enabled, config.rebalance.enabled) == (augment, rebalance)
    assert config.model.backbone == backbone
    assert [(stage.epochs, stage.trainable) for stage in config.train.stages] == stages
    assert find_config(name.removesuffix(".yaml")) == find_config(name)


def test_bundled_config_names_lists_the_three_stages():
    assert set(BUNDLED) <= set(bundled_config_names())


def test_every_bundled_key_is_commented():
    for name in BUNDLED:
        for number, line in enumerate(find_config(name).read_text().splitlines(), 1):
            if ":" in line and not line.lstrip().startswith(("#", "-")) and line.strip()[-1] != ":":
                assert "#" in line, f"{name}:{number} has no comment: {line}"


def test_defaults_round_trip_through_yaml(tmp_path):
    config = load_config("final.yaml")
    saved = tmp_path / "resolved.yaml"
    saved.write_text(config.to_yaml())
    again = load_config(saved)
    assert again == config
    assert again.fingerprint() == config.fingerprint()


def test_overrides_are_typed_and_applied():
    config = load_config("baseline.yaml", ["train.epochs=5", "model.dropout=0.3",
                                           "model.filters=[8, 16]", "data.holdout_dirs=[a, b]"])
    assert config.train.epochs == 5
    assert config.model.dropout == 0.3
    assert config.model.filters == [8, 16]
    assert config.data.holdout_dirs == ["a", "b"]


def test_integer_is_accepted_where_a_number_is_expected():
    assert load_config(None, ["train.learning_rate=1"]).train.learning_rate == 1.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trian": {}}, "unknown config key 'trian' (did you mean 'train'?)"),
        ({"train": {"epoch": 3}}, "unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
        ({"train": {"epochs": "five"}}, "config key 'train.epochs': expected an integer, got 'five'"),
        ({"train": {"epochs": True}}, "config key 'train.epochs': expected an integer"),
        ({"train": {"epochs": -1}}, "config key 'train.epochs' must be at least 1"),
        ({"data": {"image_size": 0}}, "config key 'data.image_size' must be at least 16"),
        ({"model": {"dropout": 1.0}}, "config key 'model.dropout' must be in [0, 1)"),
        ({"model": {"filters": []}}, "config key 'model.filters' must not be empty"),
        ({"model": {"filters": [8, "x"]}}, "config key 'model.filters[1]': expected an integer"),
        ({"model": {"backbone": "resnet"}}, "config key 'model.backbone': expected one of"),
        ({"train": {"stages": [{"epochs": 1, "trainable": "some"}]}}, "train.stages[0].trainable"),
        ({"data": "big"}, "config key 'data': expected a mapping"),
        ({"train": {"melanoma_class": datetime.date(2020, 1, 1)}},  # YAML reads 2020-01-01 as a date
         "config key 'train.melanoma_class': expected a string, got datetime.date(2020, 1, 1)"),
        ({"train": {"stages": [{"epochs": 1}, {"epochs": 0}]}},
         "config key 'train.stages[1].epochs' must be at least 1"),
        ({"train": {"stages": [{"epoch": 1}]}},
         "unknown config key 'train.stages[0].epoch' (did you mean 'train.stages[0].epochs'?)"),
        ({"data": {"near_duplicate_distance": 17}},
         "config key 'data.near_duplicate_distance' must be in [0, 16], or null"),
        ({"data": {"validation_split": 1}}, "config key 'data.validation_split' must be in (0, 1)"),
        ({"train": {"learning_rate": 0}}, "config key 'train.learning_rate' must be positive"),
        ({"train": {"learning_rate": "1e-3"}}, "config key 'train.learning_rate': expected a number"),
        ({"data": {"drop_conflicts": 1}}, "config key 'data.drop_conflicts': expected true/false, got 1"),
        ({"data": {"classes": ["a", "a"]}}, "config key 'data.classes' must not repeat a name"),
        ({"data": {"sources": [{"name": "clinic"}]}}, "config key 'data.sources[0].path' is required"),
        ({"data": {"sources": [{"path": "a", "label_map": {1: "melanoma"}}]}},
         "config key 'data.sources[0].label_map': expected a string, got 1"),
        ({"model": {"filters": [8, 0]}}, "config key 'model.filters' must be positive"),
        ({"model": {"linear_probe": True}}, "config key 'model.linear_probe' needs a pretrained backbone"),
        ({1: 2}, "unknown config key '1'"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, values, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(MelanomaError) as error:
        load_config(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 1\ntrain:\n  epochs: [1, 2\n")
    with pytest.raises(MelanomaError, match=r"broken.yaml' line \d+"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs", "not of the form key=value"),
        ("train.epochs=abc", "expected an integer"),
        ("train.nope=1", "unknown config key 'train.nope'"),
        ("seed.x=1", "config key 'seed': expected an integer"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(MelanomaError, match=re.escape(message)):
        load_config(None, [override])


def test_missing_config_lists_the_bundled_ones():
    with pytest.raises(MelanomaError, match=r"bundled configs: .*final\.yaml"):
        load_config("no-such-config.yaml")


@pytest.mark.parametrize("override", [
    "rebalance.rotate_probability=5", "rebalance.flip_probability=-0.1",
    "rebalance.zoom_probability=1.5", "rebalance.brightness_probability=2",
    "rebalance.contrast_probability=-1", "rebalance.max_rotation=-5", "rebalance.max_rotation=26",
    "rebalance.max_zoom=-3", "rebalance.max_zoom=0.5", "rebalance.max_brightness_change=1.5",
    "rebalance.max_contrast_change=-0.2", "rebalance.target=0",
])
def test_rebalance_values_out_of_range_name_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(MelanomaError, match=rf"^config key '{re.escape(key)}' must ") as caught:
        load_config(None, [override])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("override", [
    "rebalance.rotate_probability=0", "rebalance.flip_probability=1", "rebalance.max_rotation=25",
    "rebalance.max_zoom=1", "rebalance.max_contrast_change=0", "rebalance.target=1",
])
def test_rebalance_values_at_the_range_ends_load(override):
    load_config(None, [override])


def test_train_epochs_beside_stages_is_refused_not_ignored(tmp_path):
    from conftest import make_dataset
    from typer.testing import CliRunner

    from melanoma_cli.cli import app

    data, run = make_dataset(tmp_path / "data", per_class=2), tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--config", "final.yaml", "--data", str(data),
                                      "--out", str(run), "--set", "train.epochs=1"])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: override 'train.epochs' has no effect") and "train.stages" in line
    assert not run.exists()
    one_stage = load_config("final.yaml", ["train.stages=[{epochs: 1, trainable: head}]"])
    assert [stage.epochs for stage in one_stage.train.stages] == [1]
    assert load_config("baseline.yaml", ["train.epochs=1"]).train.epochs == 1
