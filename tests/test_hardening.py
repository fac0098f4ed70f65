"""Hardening: every bad input gives a clear one-line error, nothing is lost, runs resume.

Every case goes through the CLI and checks the exit code, that the one "Error: ..." line on
stderr names the file, key or value, and that no exception escaped (CliRunner catches what
would be a traceback in `result.exception`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_OVERRIDES, lesion_image, make_dataset, tree_hashes
from PIL import Image
from typer.testing import CliRunner, Result

from melanoma_cli.cli import app
from melanoma_cli.data.images import to_model_input
from melanoma_cli.runtime.loading import load_classifier

runner = CliRunner()
IS_ROOT = os.geteuid() == 0
READABLE = ["alpha.png", "deep16.png", "gray.jpg", "cmyk.jpg", "huge.jpg", "animated.gif", "UPPER.JPG",
            "mélanome_ß.jpg"]
UNREADABLE = {"truncated.jpg": "truncated or corrupt image data", "zero.jpg": "empty file (0 bytes)",
              "page.jpg": "not an image", "loop.jpg": "Too many levels of symbolic links"}
SKIP_ROOT = pytest.mark.skipif(IS_ROOT, reason="root reads and writes everything")


def cli(*args: object) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


def assert_error(result: Result, *names: object) -> None:
    """Exit 1, one "Error:" line (the last on stderr) naming `names`, empty stdout."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no traceback
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert errors == [lines[-1]], result.stderr
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    assert result.stdout.strip() == ""


TINY = [arg for override in TINY_OVERRIDES for arg in ("--set", override)]


def train(data: Path, out: Path, *extra: object) -> Result:
    return cli("train", "--data", data, "--out", out, *TINY, *extra)


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset shared by tests that only read it."""
    return make_dataset(tmp_path_factory.mktemp("clean") / "data", per_class=6)


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's trained run, free to damage."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


# --- paths -------------------------------------------------------------------------------

def _missing(tmp: Path) -> Path:
    return tmp / "absent"


def _a_file(tmp: Path) -> Path:
    (tmp / "photo.jpg").write_bytes(b"")
    return tmp / "photo.jpg"


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _no_class_folders(tmp: Path) -> Path:
    (tmp / "flat").mkdir()
    lesion_image("nevus", 0).save(tmp / "flat" / "a.jpg")
    return tmp / "flat"


def _looping_link(tmp: Path) -> Path:
    os.symlink(tmp / "loop", tmp / "loop")
    return tmp / "loop"


def _unreadable(tmp: Path) -> Path:
    folder = make_dataset(tmp / "locked", per_class=2)
    folder.chmod(0)
    return folder


BAD_FOLDERS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (_missing, "does not exist"),
    "file": (_a_file, "is a file, expected a folder"),
    "empty": (_empty, "has no class subfolders"),
    "no-class-subfolders": (_no_class_folders, "has no class subfolders"),
    "looping-link": (_looping_link, "is a broken or looping link"),
    "unreadable": (_unreadable, "cannot be read"),
}


def _command(name: str, folder: Path, tmp: Path, model: Path) -> list[object]:
    return {
        "train": ["train", "--data", folder, "--out", tmp / "run", *TINY],
        "evaluate": ["evaluate", folder, "--model", model, "--json"],
        "inspect-dataset": ["inspect-dataset", folder, "--json"],
        "rebalance": ["rebalance", folder, "--out", tmp / "balanced", "--json"],
    }[name]


@pytest.mark.parametrize("command", ["train", "evaluate", "inspect-dataset", "rebalance"])
@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_data_folder(case, command, tmp_path, trained_run):
    if case == "unreadable" and IS_ROOT:
        pytest.skip("root reads everything")
    make, message = BAD_FOLDERS[case]
    folder = make(tmp_path)
    try:
        assert_error(cli(*_command(command, folder, tmp_path, trained_run)), f"'{folder}'", message)
    finally:
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(0o755)
    assert not (tmp_path / "run").exists() and not (tmp_path / "balanced").exists()


def _class_without_images(tmp: Path) -> tuple[Path, Path, str]:
    data = make_dataset(tmp / "data", per_class=4)
    for path in (data / "nevus").iterdir():
        path.unlink()
    (data / "nevus" / "notes.jpg").write_text("not an image")
    return data, tmp / "run", f"class folder '{data / 'nevus'}' has no readable images"


def _one_class(tmp: Path) -> tuple[Path, Path, str]:
    data = make_dataset(tmp / "data", per_class=4, classes=("nevus",))
    return data, tmp / "run", "has only one class folder ('nevus')"


def _out_inside_data(tmp: Path) -> tuple[Path, Path, str]:
    data = make_dataset(tmp / "data", per_class=4)
    return data, data / "run", f"refusing to write run folder '{data / 'run'}' inside input folder"


def _out_under_a_file(tmp: Path) -> tuple[Path, Path, str]:
    (tmp / "a-file").write_text("")
    out = tmp / "a-file" / "run"
    return make_dataset(tmp / "data", per_class=4), out, f"output folder '{out}' cannot be written"


def _out_read_only(tmp: Path) -> tuple[Path, Path, str]:
    (tmp / "locked").mkdir(mode=0o555)
    out = tmp / "locked" / "run"
    return make_dataset(tmp / "data", per_class=4), out, f"output folder '{out}' cannot be written"


@pytest.mark.parametrize("case", [
    _class_without_images, _one_class, _out_inside_data, _out_under_a_file,
    pytest.param(_out_read_only, marks=SKIP_ROOT),
], ids=["class-without-images", "one-class", "out-inside-data", "out-under-a-file", "out-read-only"])
def test_bad_training_layout(case, tmp_path):
    data, out, message = case(tmp_path)
    before = tree_hashes(data)
    assert_error(train(data, out), message)
    assert not out.exists()
    assert tree_hashes(data) == before


@pytest.mark.parametrize("command", ["evaluate", "predict", "rebalance", "inspect-dataset"])
def test_output_that_cannot_be_written(command, tmp_path, clean_data, trained_run):
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "a-file" / "out"
    args, message = {
        "evaluate": (["evaluate", clean_data, "--model", trained_run, "--report-dir", target],
                     "report folder"),
        "predict": (["predict", clean_data, "--model", trained_run, "--csv", target],
                    "CSV file"),
        "rebalance": (["rebalance", clean_data, "--out", target], "output folder"),
        "inspect-dataset": (["inspect-dataset", clean_data, "--plot", target], "cannot write plot"),
    }[command]
    assert_error(cli(*args, "--json"), message, f"'{target}'")


# --- images ------------------------------------------------------------------------------

def _odd_pictures() -> dict[str, tuple[Image.Image, int]]:
    """What each readable odd file shows (in RGB, grey or RGBA), and how many grey levels its
    stored copy may be off on average at the model's size (0: lossless)."""
    lesion = [lesion_image("melanoma", 100 + i, 64) for i in range(8)]
    return {"alpha.png": (lesion[0], 0), "deep16.png": (lesion[1].convert("L"), 0),
            "gray.jpg": (lesion[2].convert("L"), 3), "cmyk.jpg": (lesion[3], 3),
            "huge.jpg": (Image.new("RGB", (64, 64), (120, 60, 40)), 3), "animated.gif": (lesion[4], 3),
            "UPPER.JPG": (lesion[7], 3), "mélanome_ß.jpg": (lesion_image("melanoma", 200, 64), 3)}


def _write_odd_images(folder: Path) -> None:
    """One file per awkward case, each with distinct content (no duplicate is dropped)."""
    folder.mkdir(parents=True, exist_ok=True)
    lesion = [lesion_image("melanoma", 100 + i, 64) for i in range(8)]
    lesion[0].convert("RGBA").save(folder / "alpha.png")
    Image.fromarray(np.asarray(lesion[1].convert("L"), np.uint16) * 257).save(folder / "deep16.png")
    lesion[2].convert("L").save(folder / "gray.jpg")
    lesion[3].convert("CMYK").save(folder / "cmyk.jpg")
    Image.new("RGB", (10_000, 10_000), (120, 60, 40)).save(folder / "huge.jpg", quality=20)
    lesion[4].save(folder / "animated.gif", save_all=True, append_images=[lesion[5], lesion[6]])
    lesion[7].save(folder / "UPPER.JPG")
    lesion_image("melanoma", 200, 64).save(folder / "mélanome_ß.jpg")
    lesion_image("melanoma", 201, 64).save(folder / "truncated.jpg")
    data = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "page.jpg").write_text("<!doctype html><html><body>Not found</body></html>")
    os.symlink("loop.jpg", folder / "loop.jpg")


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("odd") / "images"
    _write_odd_images(folder)
    return folder


def test_odd_images_are_what_they_claim(odd_images):
    def opened(name: str) -> Image.Image:
        return Image.open(odd_images / name)

    assert opened("alpha.png").mode == "RGBA" and opened("deep16.png").mode.startswith("I;16")
    assert opened("gray.jpg").mode == "L" and opened("cmyk.jpg").mode == "CMYK"
    assert opened("huge.jpg").size == (10_000, 10_000) and (odd_images / "huge.jpg").stat().st_size < 2e6
    assert opened("animated.gif").n_frames == 3


def test_huge_image_decodes_small_and_fast(odd_images):
    from melanoma_cli.data.images import open_image, to_model_input

    started = time.perf_counter()
    assert open_image((odd_images / "huge.jpg").read_bytes(), draft_size=24).size[0] <= 1250
    assert to_model_input(odd_images / "huge.jpg", 24).shape == (24, 24, 3)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("name", READABLE)
def test_readable_image_is_converted(name, odd_images, trained_run):
    result = cli("predict", odd_images / name, "--model", trained_run, "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["path"] == str(odd_images / name)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning")]
    gray = name in ("deep16.png", "gray.jpg")  # the only warning: an image without colour
    assert warnings == ([f"Warning: 1 image(s) have no colour (grayscale); the model was trained on colour "
                         f"dermoscopy, so their predictions are unreliable: '{odd_images / name}'"]
                        if gray else [])
    picture, tolerance = _odd_pictures()[name]
    decoded = to_model_input(odd_images / name, 24)
    expected = to_model_input(picture, 24)
    assert np.abs(decoded.astype(int) - expected).mean() <= tolerance  # the picture, not noise
    classifier = load_classifier(trained_run, "keras")
    assert list(record["probabilities"].values()) == pytest.approx(
        classifier.predict(decoded[None])[0].tolist(), abs=1e-5)  # what predict classified


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_image_is_skipped_and_listed(name, odd_images, trained_run, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(odd_images / "gray.jpg", folder)
    if name == "loop.jpg":
        os.symlink("loop.jpg", folder / name)
    else:
        shutil.copy(odd_images / name, folder)
    result = cli("predict", folder, "--model", trained_run, "--json")
    assert result.exit_code == 3, result.output
    records = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert records["gray.jpg"]["status"] == "classified" and len(records) == 2
    assert records[name]["status"] == "unreadable" and records[name]["reason"].startswith(UNREADABLE[name])
    assert f"'{folder / name}'" in result.stderr
    alone = cli("predict", folder / name, "--model", trained_run, "--json")
    assert_error(alone, f"none of the 1 file(s) could be read as an image ('{folder / name}': "
                        f"{UNREADABLE[name]}")


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of plain JPEGs, with every awkward file added to 'melanoma'."""
    data = make_dataset(tmp_path_factory.mktemp("odd-data") / "data", per_class=6)
    _write_odd_images(data / "melanoma")
    return data


@pytest.fixture(scope="module")
def odd_training(odd_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, bool]:
    """`train --json` once on the awkward dataset; whether it left the data untouched."""
    before = tree_hashes(odd_dataset)
    result = train(odd_dataset, tmp_path_factory.mktemp("odd-run") / "run", "--json")
    return result, tree_hashes(odd_dataset) == before


def test_training_converts_readable_images_and_lists_skipped_ones(odd_training, odd_dataset):
    result, _ = odd_training
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["data"]["skipped"] == len(UNREADABLE)
    used = summary["data"]["train"]["melanoma"] + summary["data"]["validation"]["melanoma"]
    assert used == 6 + len(READABLE)
    assert f"Warning: skipped {len(UNREADABLE)} unreadable file(s):" in result.stderr
    for name, reason in UNREADABLE.items():
        assert f"  {odd_dataset / 'melanoma' / name}: {reason}" in result.stderr


# --- configs -----------------------------------------------------------------------------

CONFIGS = {
    "yaml-syntax": ("seed: 1\ntrain:\n  epochs: [1, 2\n", ["line 4", "flow sequence at line 3"]),
    "unknown-key": ("train:\n  epoch: 3\n", ["'train.epoch'", "did you mean 'train.epochs'"]),
    "wrong-type": ("train:\n  epochs: five\n", ["'train.epochs'", "expected an integer, got 'five'"]),
    "negative-epochs": ("train:\n  epochs: -2\n", ["'train.epochs'", "must be at least 1"]),
    "image-size-0": ("data:\n  image_size: 0\n", ["'data.image_size'", "must be at least 16"]),
    "dropout-1": ("model:\n  dropout: 1.0\n", ["'model.dropout'", "must be in [0, 1)"]),
    "dropout-negative": ("model:\n  dropout: -0.1\n", ["'model.dropout'", "must be in [0, 1)"]),
    "empty-filters": ("model:\n  filters: []\n", ["'model.filters'", "must not be empty"]),
    "negative-seed": ("seed: -1\n", ["'seed'", "must be in [0, 4294967295]"]),
    "classes-not-a-list": ("data:\n  classes: nevus\n", ["'data.classes'", "got 'nevus'"]),
    "classes-do-not-match": (
        "data:\n  classes: [melanoma, nevus, dermatofibroma]\n",
        ["'data.classes'", "missing 'dermatofibroma'", "unexpected 'vascular lesion'"]),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_bad_config(case, tmp_path, clean_data):
    text, names = CONFIGS[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = cli("train", "--data", clean_data, "--out", tmp_path / "run", "--config", config)
    assert_error(result, *names)
    assert not (tmp_path / "run").exists()


def test_matching_class_list_trains(tmp_path, clean_data):
    result = train(clean_data, tmp_path / "run", "--set", "data.classes=[vascular lesion, melanoma, nevus]")
    assert result.exit_code == 0, result.output


# --- models ------------------------------------------------------------------------------

def _edit_info(run: Path, **changes: object) -> None:
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**info, **changes}))


def _truncate_model(run: Path) -> None:
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 2])


MODELS: dict[str, tuple[Callable[[Path], object], str]] = {
    "no-model-file": (lambda run: (run / "model.keras").unlink(),
                      "model file '{run}/model.keras' does not exist"),
    "no-model-json": (lambda run: (run / "model.json").unlink(), "model info '{run}/model.json' is missing"),
    "model-json-not-json": (lambda run: (run / "model.json").write_text("{classes"), "is not valid JSON"),
    "model-json-classes": (lambda run: _edit_info(run, classes=["melanoma", "nevus"]),
                           "lists 2 classes but the model has 3 outputs"),
    "model-json-image-size": (lambda run: _edit_info(run, image_size=64),
                              "says image_size 64 but the model takes (24, 24)"),
    "model-json-threshold": (lambda run: _edit_info(run, melanoma_threshold="high"),
                             "'melanoma_threshold' must be a number or null, not 'high'"),
    "keras-file-garbage": (lambda run: (run / "model.keras").write_text("<html>"),
                           "model file '{run}/model.keras' cannot be loaded: damaged"),
    "keras-file-truncated": (_truncate_model, "model file '{run}/model.keras' cannot be loaded: damaged"),
}


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("case", list(MODELS))
def test_bad_model(case, command, run_copy, clean_data):
    damage, message = MODELS[case]
    damage(run_copy)
    target = clean_data / "nevus" / "nev_000.jpg" if command == "predict" else clean_data
    assert_error(cli(command, target, "--model", run_copy, "--json"), message.format(run=run_copy))


def test_missing_model_path(tmp_path, clean_data):
    assert_error(cli("predict", clean_data, "--model", tmp_path / "absent.keras", "--json"),
                 f"model file '{tmp_path / 'absent.keras'}' does not exist")


def test_test_folder_with_classes_the_model_does_not_know(trained_run, tmp_path):
    test_dir = make_dataset(tmp_path / "test", per_class=1, classes=("melanoma", "dermatofibroma"))
    assert_error(cli("evaluate", test_dir, "--model", trained_run, "--json"),
                 f"test folder '{test_dir}'", "the model does not know: 'dermatofibroma'")


# --- interruption and resume -------------------------------------------------------------

def test_first_interrupt_asks_a_second_forces_but_never_while_epoch_files_are_written():
    from melanoma_cli.training.fit import Interrupts

    interrupts, steps = Interrupts(), []
    with interrupts.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler has run by now, and raised nothing
        assert interrupts.requested
        with pytest.raises(KeyboardInterrupt), interrupts.held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            steps.append("files written")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert steps == ["files written"]  # the forced stop was raised only after the held block


def test_ctrl_c_keeps_a_valid_run_that_resume_completes(tmp_path, clean_data):
    from melanoma_cli.config import SourceConfig, load_config
    from melanoma_cli.training.train import train as run_training

    out = tmp_path / "run"

    def ctrl_c_after_first_epoch(kind: str, values: dict) -> None:
        if kind == "epoch" and values["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    before = tree_hashes(clean_data)
    config = load_config(None, [*TINY_OVERRIDES, "train.epochs=3"])
    first = run_training(config, [SourceConfig(str(clean_data))], out, progress=ctrl_c_after_first_epoch)
    info = json.loads((out / "model.json").read_text())
    assert first.interrupted and info["status"] == "incomplete" and info["best_epoch"] == 1
    assert info["training"]["data_dir"] == str(clean_data)
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 1
    history = (out / "history.csv").read_text().splitlines()
    assert history[1].startswith("1,")
    old_style = [history[0], "0" + history[1][1:], ""]  # older versions counted epochs from 0
    (out / "history.csv").write_text("\n".join(old_style))

    result = cli("train", "--resume", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    info = json.loads((out / "model.json").read_text())
    history = [line.split(",") for line in (out / "history.csv").read_text().splitlines()]
    assert info["status"] == "complete" and summary["training"]["epochs_run"] == 3
    assert [row[0] for row in history] == ["epoch", "1", "2", "3"]  # older 0-based rows renumbered
    scores = {int(row[0]): float(row[history[0].index("val_balanced_accuracy")]) for row in history[1:]}
    assert info["best_epoch"] == summary["best_epoch"] == max(scores, key=scores.get)
    assert {"model.keras", "last.keras", "metrics.json", "curves.png"} <= {p.name for p in out.iterdir()}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert tree_hashes(clean_data) == before


def _resumable(run: Path) -> None:
    """Pretend the run stopped after its first epoch."""
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "epochs_done": 1}))


def _not_a_run_folder(run: Path, tmp: Path) -> list[object]:
    return ["--resume", tmp]


def _config_no_longer_loads(run: Path, tmp: Path) -> list[object]:
    (run / "config.yaml").write_text("trian: {}\n")
    return ["--resume", run]


def _already_complete(run: Path, tmp: Path) -> list[object]:
    return ["--resume", run]


def _different_data(run: Path, tmp: Path) -> list[object]:
    _resumable(run)
    return ["--resume", run, "--data", make_dataset(tmp / "other", per_class=5)]


RESUMES: dict[str, tuple[Callable[[Path, Path], list[object]], str]] = {
    "not-a-run-folder": (_not_a_run_folder, "cannot resume '{tmp}': not a run folder"),
    "config-no-longer-loads": (_config_no_longer_loads,
                               "cannot resume '{run}': unknown config key 'trian' (did you mean 'train'?)"),
    "already-complete": (_already_complete, "has trained all 3 epochs; nothing to resume"),
    "different-data": (_different_data, "does not give the split recorded in split.csv"),
}


@pytest.mark.parametrize("case", list(RESUMES))
def test_resume_refusals(case, run_copy, tmp_path):
    arguments, message = RESUMES[case]
    args = arguments(run_copy, tmp_path)
    assert_error(cli("train", *args), message.format(run=run_copy, tmp=tmp_path))


def test_resume_takes_no_new_settings(run_copy):
    result = cli("train", "--resume", run_copy, "--set", "train.epochs=9")
    assert result.exit_code == 2 and "cannot be combined with --set" in result.output
    result = cli("train", "--out", run_copy.parent / "new")
    assert result.exit_code == 2 and "--data" in result.output


# --- guarantees: inputs untouched, JSON on stdout stays valid with warnings --------------

@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "inspect-dataset", "rebalance"])
def test_inputs_untouched_and_json_valid_with_warnings(command, odd_dataset, odd_training, run_copy,
                                                       tmp_path):
    if command == "train":
        result, untouched = odd_training
        assert untouched
    else:
        before = tree_hashes(odd_dataset), tree_hashes(run_copy)
        args = {
            "evaluate": ["evaluate", odd_dataset, "--model", run_copy, "--report-dir", tmp_path / "r"],
            "predict": ["predict", odd_dataset, "--model", run_copy, "--csv", tmp_path / "p.csv"],
            "inspect-dataset": ["inspect-dataset", odd_dataset, "--plot", tmp_path / "classes.png"],
            "rebalance": ["rebalance", odd_dataset, "--out", tmp_path / "balanced"],
        }[command]
        result = cli(*args, "--json")
        assert (tree_hashes(odd_dataset), tree_hashes(run_copy)) == before
    assert result.exit_code == (3 if command == "predict" else 0), result.output  # 3: some unreadable
    records = json.loads(result.stdout)
    if command == "predict":  # every input has a row: unreadable ones say why
        assert any(r["status"] == "unreadable" and r["path"].endswith("zero.jpg") for r in records)
        assert "file(s) could not be read as an image" in result.stderr
    elif command != "inspect-dataset":  # inspect reports unreadable files in its JSON instead
        assert "Warning: skipped" in result.stderr and "zero.jpg" in result.stderr
