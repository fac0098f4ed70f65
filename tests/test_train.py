"""`melanoma train` end to end through the CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_OVERRIDES, make_dataset, tree_hashes
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import TrainConfig
from melanoma_cli.data.images import decode_many
from melanoma_cli.runtime.loading import load_classifier

pytestmark = pytest.mark.slow  # every test here trains, serves or spawns processes

runner = CliRunner()
RUN_FILES = {"model.keras", "model.json", "config.yaml", "history.csv", "metrics.json", "curves.png",
             "split.csv"}


def assert_threshold_reaches_the_target_on_validation(run: Path, threshold: float) -> None:
    """Scored by the saved model, the validation side of split.csv has its melanomas flagged at
    the configured sensitivity, and one notch higher (the next melanoma score) would miss it."""
    with (run / "split.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["side"] == "validation"]
    classifier = load_classifier(run, "keras")
    images = decode_many([Path(row["path"]) for row in rows], classifier.image_size)[0]
    scores = classifier.predict(images)[:, classifier.classes.index("melanoma")].astype(np.float64)
    melanoma = np.sort(scores[[row["label"] == "melanoma" for row in rows]])[::-1]
    target = TrainConfig().melanoma_sensitivity
    needed = int(np.ceil(target * len(melanoma)))
    assert len(melanoma) >= 2 and (melanoma >= threshold).sum() == needed
    assert melanoma[needed - 1] > threshold  # not on the edge: another engine's 1e-7 keeps the flag
    assert needed == len(melanoma) or melanoma[needed] < threshold


def train_args(data, out, *extra: str, overrides=TINY_OVERRIDES) -> list[str]:
    args = ["train", "--data", str(data), "--out", str(out), *extra]
    for override in overrides:
        args += ["--set", override]
    return args


def test_trained_run_folder_is_complete(trained_run):
    assert {p.name for p in trained_run.iterdir()} >= RUN_FILES
    info = json.loads((trained_run / "model.json").read_text())
    assert info["classes"] == ["melanoma", "nevus", "vascular lesion"]
    assert info["image_size"] == 24
    assert info["status"] == "complete"
    assert set(info["versions"]) >= {"melanoma_cli", "tensorflow", "keras"}
    assert_threshold_reaches_the_target_on_validation(trained_run, info["melanoma_threshold"])
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["validation"]["per_class"]) == set(info["classes"])
    assert metrics["data"]["validation"] == {"melanoma": 2, "nevus": 2, "vascular lesion": 2}
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["data"]["image_size"] == 24 and config["train"]["epochs"] == 3
    history = (trained_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 4


def test_model_files_are_deflated_keras_archives_that_load(trained_run):
    import zipfile

    from melanoma_cli.runtime.run_folder import load_model

    for name in ("model.keras", "last.keras"):
        with zipfile.ZipFile(trained_run / name) as archive:
            assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
            assert "model.weights.h5" in archive.namelist()
    assert load_model(trained_run).model.outputs[0].shape[-1] == 3


def test_history_counts_epochs_from_one_like_best_epoch(trained_run):
    import csv

    with (trained_run / "history.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    scores = {int(row["epoch"]): float(row[metrics["monitor"]]) for row in rows}
    assert metrics["best_epoch"] == max(scores, key=scores.get)  # the first of equal bests


def test_json_summary_and_no_training_data_modified(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    before = tree_hashes(data)
    result = runner.invoke(app, train_args(data, tmp_path / "run", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run_dir"] == str(tmp_path / "run")
    assert summary["best_epoch"] == 1
    assert set(summary["validation"]) >= {"accuracy", "balanced_accuracy", "per_class"}
    assert tree_hashes(data) == before


def test_refuses_to_overwrite_a_run_unless_asked(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.json").write_text("{}")
    refused = runner.invoke(app, train_args(data, out))
    assert refused.exit_code == 1
    assert "already exists (use --overwrite" in refused.stderr
    replaced = runner.invoke(app, train_args(data, out, "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    assert {p.name for p in out.iterdir()} >= RUN_FILES


def test_same_seed_gives_identical_metrics(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    for name in ("a", "b"):
        result = runner.invoke(app, train_args(data, tmp_path / name, overrides=[
            *TINY_OVERRIDES, "augment.enabled=true", "train.epochs=2"]))
        assert result.exit_code == 0, result.output
    first = (tmp_path / "a" / "metrics.json").read_text()
    assert first == (tmp_path / "b" / "metrics.json").read_text()


def test_rebalance_stage_grows_only_the_training_split(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    result = runner.invoke(app, train_args(data, tmp_path / "run", "--json", overrides=[
        *TINY_OVERRIDES, "rebalance.enabled=true", "rebalance.target=9", "train.class_weights=true"]))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    train_counts, generated = summary["data"]["train"], summary["data"]["generated"]
    assert all(train_counts[c] + generated[c] == 9 for c in train_counts)
    assert summary["validation"]["n"] == sum(summary["data"]["validation"].values())
    assert summary["validation"]["n"] + sum(train_counts.values()) == 18


def test_staged_backbone_training(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    stages = "[{epochs: 1, learning_rate: 0.001, trainable: head}, {epochs: 1, trainable: '1'}]"
    result = runner.invoke(app, train_args(data, tmp_path / "run", "--json", overrides=[
        "data.image_size=32", "data.batch_size=8", "model.backbone=efficientnet_lite0",
        "model.weights=imagenet", "model.dense_units=0", f"train.stages={stages}"]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["training"]["epochs_run"] == 2


def test_bad_config_value_is_one_line_error(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=4)
    result = runner.invoke(app, train_args(data, tmp_path / "run", overrides=["train.epochs=0"]))
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: config key 'train.epochs' must be at least 1"
    assert not (tmp_path / "run").exists()


def test_sigterm_keeps_best_checkpoint_and_marks_run_incomplete(tmp_path):
    import subprocess
    import time

    data = make_dataset(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    args = train_args(data, out, overrides=[*TINY_OVERRIDES, "train.epochs=500"])
    process = subprocess.Popen([sys.executable, "-m", "melanoma_cli", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "model.keras").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "training interrupted: best checkpoint kept" in stderr
    assert f"melanoma train --resume '{out}'" in stderr
    info = json.loads((out / "model.json").read_text())
    assert info["status"] == "incomplete"
    assert 1 <= info["best_epoch"] < 500
    assert json.loads((out / "metrics.json").read_text())["validation"]["n"] > 0


def test_split_csv_records_every_file_once(trained_run):
    import csv

    with (trained_run / "split.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    assert sum(row["side"] == "validation" for row in rows) == 6
    assert len({row["path"] for row in rows}) == 30


def test_validation_loss_is_the_smoothed_weighted_training_loss(tmp_path):
    """val_loss in history.csv is the training loss (label smoothing, class weights) on validation."""
    import csv

    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    from melanoma_cli.config import SourceConfig, load_config
    from melanoma_cli.data.preparation import prepare_data
    from melanoma_cli.utils.tensorflow import import_keras

    data = make_dataset(tmp_path / "data", per_class=12, classes=("nevus", "vascular lesion"))
    make_dataset(data, per_class=5, classes=("melanoma",))
    overrides = [*TINY_OVERRIDES, "train.epochs=4", "train.learning_rate=0.01",
                 "train.label_smoothing=0.2", "train.class_weights=true"]
    result = runner.invoke(app, train_args(data, tmp_path / "run", overrides=overrides))
    assert result.exit_code == 0, result.output

    config = load_config(tmp_path / "run" / "config.yaml")
    prepared = prepare_data(config, [SourceConfig(str(data))])  # the same split
    model = import_keras().models.load_model(tmp_path / "run" / "model.keras", compile=False)
    probabilities = np.clip(model.predict(np.asarray(prepared.val_images, np.float32), verbose=0), 1e-7, 1)
    classes = probabilities.shape[1]
    targets = np.eye(classes)[prepared.val_labels] * (1 - 0.2) + 0.2 / classes
    weights = compute_class_weight("balanced", classes=np.arange(classes), y=prepared.train_labels)
    expected = np.mean(weights[prepared.val_labels] * -(targets * np.log(probabilities)).sum(axis=1))
    unweighted = np.mean(-np.log(probabilities[np.arange(len(prepared.val_labels)), prepared.val_labels]))
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best_epoch"]
    with (tmp_path / "run" / "history.csv").open(newline="") as handle:
        logged = float(next(r for r in csv.DictReader(handle) if int(r["epoch"]) == best)["val_loss"])
    assert abs(expected - unweighted) > 0.01  # the old, plain loss would fail the next line
    assert abs(logged - expected) < 1e-4 * max(1.0, expected)


def test_run_stopped_in_its_first_epoch_is_refused_with_the_resume_hint(tmp_path):
    import pytest

    from melanoma_cli.config import SourceConfig, load_config
    from melanoma_cli.training.train import train as run_training
    from melanoma_cli.utils.errors import MelanomaError

    data = make_dataset(tmp_path / "data", per_class=6)
    out = tmp_path / "run"

    def interrupt_first_batch(kind: str, values: dict) -> None:
        if kind == "batch":
            raise KeyboardInterrupt

    with pytest.raises(MelanomaError, match="before the first epoch ended"):
        run_training(load_config(None, TINY_OVERRIDES), [SourceConfig(str(data))], out,
                     progress=interrupt_first_batch)
    refused = runner.invoke(app, train_args(data, out))
    assert refused.exit_code == 1
    assert (f"run folder '{out}' already exists (use --resume '{out}' to continue it or --overwrite "
            "to replace it)") in " ".join(refused.stderr.split())
    resumed = runner.invoke(app, ["train", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output


def _tiny_melanoma_data(root):
    """12 nevus and vascular images, 3 melanoma of which one is also filed as nevus."""
    import shutil

    data = make_dataset(root, per_class=12, classes=("nevus", "vascular lesion"))
    make_dataset(data, per_class=2, classes=("melanoma",))
    shutil.copy(data / "nevus" / "nev_000.jpg", data / "melanoma" / "conflict.jpg")
    return data


def test_class_counts_and_small_class_warnings(tmp_path):
    data = _tiny_melanoma_data(tmp_path / "data")
    result = runner.invoke(app, train_args(data, tmp_path / "run", "--json"))
    assert result.exit_code == 0, result.output
    stderr = " ".join(result.stderr.split())
    assert "Images per class after cleaning" in stderr
    assert "Warning: class 'melanoma' has only 2 training image(s) (< 10) and 0 validation" in stderr
    assert "no 'melanoma' image in validation: no melanoma threshold could be set" in stderr
    assert "falls back to top-1" in stderr
    counts = json.loads(result.stdout)["data"]["class_counts"]
    assert counts["melanoma"] == {"train": 2, "validation": 0, "dropped": 1, "unreadable": 0,
                                  "generated": 0}
    assert counts["nevus"]["dropped"] == 1 and counts["nevus"]["train"] + counts["nevus"]["validation"] == 11
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["class_counts"] == counts
    assert json.loads((tmp_path / "run" / "model.json").read_text())["training"]["class_counts"] == counts


def test_train_and_evaluate_keep_tensorflow_and_sklearn_noise_off_the_terminal(tmp_path):
    import subprocess

    data = _tiny_melanoma_data(tmp_path / "data")
    args = train_args(data, tmp_path / "run", overrides=[*TINY_OVERRIDES, "train.epochs=2"])
    train = subprocess.run([sys.executable, "-m", "melanoma_cli", *args], capture_output=True, text=True,
                           timeout=300)
    assert train.returncode == 0, train.stderr
    evaluate = subprocess.run([sys.executable, "-m", "melanoma_cli", "evaluate", str(data),
                               "--model", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr
    for stderr in (train.stderr, evaluate.stderr):
        noisy = [line for line in stderr.splitlines()
                 if any(mark in line for mark in ("tensorflow/", "oneDNN", "UserWarning", "I0000", "W0000",
                                                  "E0000", "absl::", "cpu_feature_guard"))]
        assert noisy == [], stderr


def test_training_without_a_melanoma_class_warns_that_nothing_will_be_flagged(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6, classes=("MEL", "nevus"))
    result = runner.invoke(app, train_args(data, tmp_path / "run", "--json"))
    assert result.exit_code == 0, result.output
    assert ("Warning: no class is named 'melanoma' (train.melanoma_class; classes: MEL, nevus): the "
            "model will never flag melanoma") in " ".join(result.stderr.split())
    assert json.loads((tmp_path / "run" / "model.json").read_text())["melanoma_class"] is None
