"""Resume of a run shaped like the shipped recipe (configs/final.yaml): a pretrained backbone,
a head stage then a fine-tuning stage, the linear probe on every stage's features.

Stopped inside a stage, the run goes on with that stage's optimizer (its step count continues);
stopped at a stage boundary, the next stage starts its own optimizer; either way the trainable
part is the stage's and the probe fitted before epoch 1 is kept, not fitted again.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.models.saving import load_network
from melanoma_cli.training.train import train
from melanoma_cli.training.trainer import build_and_compile, stages

# final.yaml's shape at toy size: 1 head epoch, then 2 epochs with the top block trainable
RECIPE = ["data.image_size=32", "data.batch_size=8", "model.backbone=efficientnet_lite0",
          "model.weights=imagenet", "model.dense_units=0", "model.linear_probe=true",
          "model.linear_probe_features=stages", "train.optimizer=adamw", "train.schedule=cosine",
          "train.class_weights=true",
          "train.stages=[{epochs: 1, learning_rate: 0.001, trainable: head}, "
          "{epochs: 2, learning_rate: 0.0003, trainable: '1'}]"]


def stopped_after(epoch: int, data: Path, out: Path) -> None:
    """Train the recipe and stop it (as Ctrl-C does) once `epoch` has ended."""
    def ctrl_c(kind: str, values: dict) -> None:
        if kind == "epoch" and values["epoch"] == epoch:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(load_config(None, RECIPE), [SourceConfig(str(data))], out, progress=ctrl_c)
    assert result.interrupted
    assert json.loads((out / "state.json").read_text())["epochs_done"] == epoch


def optimizer_steps(run: Path) -> int:
    return int(load_network(run / "last.keras", compile=True).optimizer.iterations.numpy())


def trainable_mask(model) -> list[bool]:
    """Whether each of the model's weights trains, in the model's weight order."""
    trainable = {id(weight) for weight in model.trainable_weights}
    return [id(weight) in trainable for weight in model.weights]


def steps_per_epoch(run: Path) -> int:
    rows = (run / "split.csv").read_text().splitlines()[1:]
    return math.ceil(sum(row.endswith(",train") for row in rows) / 8)


@pytest.mark.slow
@pytest.mark.parametrize(("stopped", "steps_before", "steps_after"), [
    (2, 1, 2),  # mid-stage: one of the fine-tuning stage's two epochs done, its optimizer goes on
    (1, 1, 2),  # stage boundary: the head stage done; the fine-tuning stage starts from step 0
], ids=["mid-stage", "stage-boundary"])
def test_resume_of_the_shipped_recipe_shape(tmp_path, stopped, steps_before, steps_after):
    data, run = make_dataset(tmp_path / "data", per_class=6), tmp_path / "run"
    stopped_after(stopped, data, run)
    steps = steps_per_epoch(run)
    assert optimizer_steps(run) == steps_before * steps
    probe = run / "linear_probe.npz"
    probe_bytes, probe_mtime = probe.read_bytes(), probe.stat().st_mtime_ns

    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["training"]["epochs_run"] == 3 and not summary["training"]["interrupted"]

    # the step count went on (mid-stage) or restarted with the stage (boundary), never both
    assert optimizer_steps(run) == steps_after * steps
    config = load_config(None, RECIPE)
    fine_tuning = stages(config)[1]
    expected = build_and_compile(config, 3, fine_tuning, steps)
    mask = trainable_mask(expected)
    assert trainable_mask(load_network(run / "last.keras", compile=True)) == mask
    assert 0 < sum(mask) < len(mask) - 10  # the head and the top block, not the whole backbone
    assert probe.read_bytes() == probe_bytes and probe.stat().st_mtime_ns == probe_mtime
