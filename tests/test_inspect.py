"""`melanoma inspect-dataset`: every planted problem is found, cleaning follows the config as
`train` does, and the folders are only read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, lesion_image, make_dataset, tree_hashes
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import DataConfig, SourceConfig
from melanoma_cli.data.dedupe import COUNT_KEYS
from melanoma_cli.data.inspection import inspect_dataset
from melanoma_cli.data.scan import scan_dataset

runner = CliRunner()


def _truncated_jpeg(path: Path) -> None:
    lesion_image("nevus", 50, size=64).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def dirty(tmp_path: Path) -> dict[str, Path]:
    """A training and a test folder with one of each problem planted; returns named paths."""
    train = make_dataset(tmp_path / "Train", per_class=4)
    mel, nev, vas = train / "melanoma", train / "nevus", train / "vascular lesion"
    shutil.copy(mel / "mel_000.jpg", mel / "mel_copy.jpg")  # duplicate within a class
    shutil.copy(nev / "nev_001.jpg", mel / "conflict.jpg")  # same bytes, two labels
    _truncated_jpeg(nev / "truncated.jpg")
    (vas / "notes.jpg").write_text("not an image, despite the name")
    (mel / "output").mkdir()  # e.g. an Augmentor output folder inside a class
    lesion_image("melanoma", 60).save(mel / "output" / "generated.jpg")
    (train / "README.txt").write_text("stray file")
    original = lesion_image("other", 70, size=64)
    original.save(nev / "photo.png")
    _resized_copy(nev / "photo.png", vas / "photo_small.jpg", 48)  # one picture, two labels
    # a look-alike: perceptual hashes 2 bits apart, but the thumbnails differ (not one picture)
    ImageEnhance.Brightness(original).enhance(1.06).save(vas / "photo_brighter.png")

    test = tmp_path / "Test"
    for label in ("melanoma", "nevus"):
        (test / label).mkdir(parents=True)
        lesion_image(label, 100).save(test / label / "own.jpg", quality=95)
    shutil.copy(nev / "nev_002.jpg", test / "melanoma" / "leaked.jpg")  # leakage, other label
    return {"train": train, "test": test, "mel": mel, "nev": nev, "vas": vas}


def _resized_copy(src: Path, dst: Path, size: int) -> None:
    """The same picture at another size and compression."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(dst, quality=90)


def _report(*args: str) -> dict:
    result = runner.invoke(app, ["inspect-dataset", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_report_finds_every_planted_problem(dirty):
    train, mel, nev, vas = dirty["train"], dirty["mel"], dirty["nev"], dirty["vas"]
    before = tree_hashes(train)
    report = _report(str(train), "--test-dir", str(dirty["test"]))
    assert report["classes"] == {"melanoma": 6, "nevus": 5, "vascular lesion": 6}
    assert report["total"] == 17
    assert report["imbalance_ratio"] == pytest.approx(6 / 5)
    reasons = {Path(u["path"]).name: u["reason"] for u in report["unreadable"]}
    assert set(reasons) == {"truncated.jpg", "notes.jpg"}
    assert "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert report["duplicate_groups"] == [[str(mel / "mel_000.jpg"), str(mel / "mel_copy.jpg")]]
    assert report["conflict_groups"] == [[str(mel / "conflict.jpg"), str(nev / "nev_001.jpg")]]
    assert report["conflicts_by_classes"] == {"melanoma / nevus": 1}
    assert report["nested"] == [
        {"path": str(mel / "output"), "files": [str(mel / "output" / "generated.jpg")]}
    ]
    assert report["outside_classes"] == [str(train / "README.txt")]
    assert report["test_overlap"] == [{
        "test_path": str(dirty["test"] / "melanoma" / "leaked.jpg"),
        "train_paths": [str(nev / "nev_002.jpg")],
        "test_class": "melanoma",
        "train_classes": ["nevus"],
    }]
    near = {tuple(p["paths"]): p for p in report["near_duplicates"]}
    planted = (str(nev / "photo.png"), str(vas / "photo_small.jpg"))
    assert set(near) == {planted}, "only what training takes for one picture (hash and thumbnail)"
    assert near[planted]["classes"] == ["nevus", "vascular lesion"]
    assert near[planted]["distance"] <= 4
    conflicts = {tuple(c["paths"]): c["kept"] for c in report["label_conflicts"]}
    assert conflicts == {(str(mel / "conflict.jpg"), str(nev / "nev_001.jpg")): [], planted: []}
    assert report["cleaning"]["dropped"] == {"duplicate_copies": 1, "label_conflicts": 4,
                                             "holdout_overlap": 0}
    assert report["cleaning"]["kept_by_class"] == {"melanoma": 4, "nevus": 3, "vascular lesion": 5}
    assert report["test"]["total"] == 3
    assert tree_hashes(train) == before


def test_report_summarises_images(dirty):
    report = _report(str(dirty["train"]), "--set", "data.near_duplicate_distance=null")
    assert report["formats"] == {"JPEG": 15, "PNG": 2}
    assert report["modes"] == {"RGB": 17}
    assert report["sizes"]["most_common"][0] == {"size": "24x24", "count": 14}
    assert report["sizes"]["max_width"] == 64
    assert report["share"]["melanoma"] == pytest.approx(6 / 17, abs=1e-4)
    assert report["near_duplicates"] == []
    assert report["test_dir"] is None and report["test_overlap"] == []


def test_tables_and_plot(dirty, tmp_path):
    plot = tmp_path / "classes.png"
    result = runner.invoke(app, ["inspect-dataset", str(dirty["train"]), "--test-dir",
                                 str(dirty["test"]), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    for heading in ("Classes in", "Unreadable or non-image files", "Folders nested below",
                    "Exact duplicates within one class", "Label conflicts",
                    "Leakage: test files", "Near duplicates", "perceptual hash"):
        assert heading in result.stdout, heading
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clean_dataset_reports_no_problems(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    report = _report(str(data), "--set", "data.near_duplicate_distance=null")
    assert report["total"] == 9 and report["imbalance_ratio"] == 1.0
    for key in ("unreadable", "duplicate_groups", "conflict_groups", "nested", "test_overlap"):
        assert report[key] == [], key
    result = runner.invoke(app, ["inspect-dataset", str(data)])
    assert "No problems found" in result.stdout


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "does not exist"),
    (lambda root: (root / "a.jpg").write_text("x") and root / "a.jpg", "is a file"),
    (lambda root: root, "has no class subfolders"),
])
def test_a_folder_that_is_not_a_dataset_exits_1(tmp_path, make, message):
    result = runner.invoke(app, ["inspect-dataset", str(make(tmp_path))])
    assert result.exit_code == 1
    assert message in result.output


def test_bad_plot_folder_and_config(dataset, tmp_path):
    result = runner.invoke(app, ["inspect-dataset", str(dataset), "--plot",
                                 str(tmp_path / "missing" / "classes.png")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["inspect-dataset", str(dataset), "--set", "data.near_duplicate_distance=65"])
    assert result.exit_code == 1
    assert "config key 'data.near_duplicate_distance' must be in [0, 16]" in result.output
    result = runner.invoke(app, ["inspect-dataset"])
    assert result.exit_code == 2 and "missing (required unless the config" in result.output


def test_perceptual_hash_only_when_asked(dataset):
    assert all(f.phash is None for f in scan_dataset(dataset).images)
    hashes = [f.phash for f in scan_dataset(dataset, perceptual_hash=True).images]
    assert all(h is not None and len(h) == 16 for h in hashes)


def test_an_empty_file_is_reported_as_empty(dataset):
    (dataset / "nevus" / "empty.jpg").write_bytes(b"")
    report = inspect_dataset([SourceConfig(str(dataset))], DataConfig(near_duplicate_distance=None))
    empty = {"path": str(dataset / "nevus" / "empty.jpg"), "reason": "empty file (0 bytes)"}
    assert empty in report["unreadable"]
    assert report["near_duplicates"] == [] and report["cleaning"]["near_duplicate_distance"] is None


def test_a_labels_csv_test_set_is_checked_for_leakage(tmp_path):
    train = make_dataset(tmp_path / "Train", per_class=3, size=64)
    test = tmp_path / "Test"
    (test / "images").mkdir(parents=True)
    shutil.copy(train / "nevus" / "nev_000.jpg", test / "images" / "a.jpg")
    _resized_copy(train / "melanoma" / "mel_001.jpg", test / "images" / "b.jpg", 48)
    lesion_image("nevus", 50, size=64).save(test / "images" / "c.jpg")
    (test / "labels.csv").write_text("file,label\na.jpg,nevus\nb.jpg,melanoma\nc.jpg,nevus\n")
    report = _report(str(train), "--test-dir", str(test))
    assert report["test"]["classes"] == {"melanoma": 1, "nevus": 2}
    assert [(o["test_path"], o["train_paths"], o["test_class"]) for o in report["test_overlap"]] == [
        (str(test / "images" / "a.jpg"), [str(train / "nevus" / "nev_000.jpg")], "nevus")]
    assert [(o["test_path"], o["train_path"]) for o in report["test_near_overlap"]] == [
        (str(test / "images" / "b.jpg"), str(train / "melanoma" / "mel_001.jpg"))]
    result = runner.invoke(app, ["inspect-dataset", str(train), "--test-dir", str(tmp_path / "nope")])
    assert result.exit_code == 1 and f"test folder '{tmp_path / 'nope'}' does not exist" in result.output


def _two_clinics(tmp_path: Path) -> tuple[Path, Path]:
    """clinic_a (a folder per class) and clinic_b (labels CSV) sharing one picture with another label."""
    clinic_a = make_dataset(tmp_path / "clinic_a", per_class=4)
    clinic_b = tmp_path / "clinic_b"
    (clinic_b / "images").mkdir(parents=True)
    shutil.copy(clinic_a / "nevus" / "nev_000.jpg", clinic_b / "images" / "x.jpg")
    lesion_image("melanoma", 77).save(clinic_b / "images" / "m.jpg")
    (clinic_b / "labels.csv").write_text("file,label\nx.jpg,vascular lesion\nm.jpg,melanoma\n")
    return clinic_a, clinic_b


@pytest.mark.parametrize(("overrides", "kept", "resolved"), [
    ([], [], 0),
    (["data.trust_sources=[clinic_b]"], [("x.jpg", "vascular lesion")], 1),
    (["data.drop_conflicts=false"], [("nev_000.jpg", "nevus"), ("x.jpg", "vascular lesion")], 0),
])
def test_the_config_decides_what_happens_to_label_conflicts(tmp_path, overrides, kept, resolved):
    clinic_a, clinic_b = _two_clinics(tmp_path)
    config = tmp_path / "inspect.yaml"
    config.write_text(f"data:\n  sources:\n    - path: {json.dumps(str(clinic_a))}\n")
    sets = [arg for override in overrides for arg in ("--set", override)]
    report = _report(str(clinic_b), "--config", str(config), *sets)
    assert [s["name"] for s in report["sources"]] == ["clinic_a", "clinic_b"]
    (conflict,) = report["label_conflicts"]
    assert sorted((Path(k["path"]).name, k["label"]) for k in conflict["kept"]) == kept
    assert report["cleaning"]["conflicts_resolved"] == resolved
    assert report["cleaning"]["dropped"]["label_conflicts"] == (2 if not kept else 0)
    result = runner.invoke(app, ["inspect-dataset", str(clinic_b), "--config", str(config), *sets])
    assert result.exit_code == 0, result.output
    assert "training keeps" in result.stdout  # the conflicts table, with what is kept of each


@pytest.mark.slow
def test_inspect_counts_what_train_keeps_copies_and_drops(tmp_path):
    """The same sources and config: inspect-dataset's counts are the training run's."""
    clinic_a = make_dataset(tmp_path / "clinic_a", per_class=7, size=64)
    clinic_b = tmp_path / "clinic_b"
    rows = [("own_m.jpg", "melanoma"), ("own_n.jpg", "nevus"), ("own_v.jpg", "vascular lesion")]
    (clinic_b / "images").mkdir(parents=True)
    for n, (file, label) in enumerate(rows):
        lesion_image(label, 500 + n, size=64).save(clinic_b / "images" / file)
    # decoded at training's scale (image_size 24), this resized copy no longer matches its original
    _resized_copy(clinic_a / "melanoma" / "mel_001.jpg", clinic_b / "images" / "small.jpg", 48)
    _resized_copy(clinic_a / "melanoma" / "mel_003.jpg", clinic_b / "images" / "recoded.jpg", 64)
    shutil.copy(clinic_a / "nevus" / "nev_002.jpg", clinic_b / "images" / "relabelled.jpg")
    rows += [("small.jpg", "melanoma"), ("recoded.jpg", "melanoma"), ("relabelled.jpg", "vascular lesion")]
    (clinic_b / "labels.csv").write_text("file,label\n" + "".join(f"{f},{label}\n" for f, label in rows))
    shutil.copy(clinic_a / "vascular lesion" / "vas_003.jpg", clinic_a / "melanoma" / "conflict.jpg")
    holdout = tmp_path / "holdout"
    _resized_copy(clinic_a / "nevus" / "nev_004.jpg", holdout / "kept_apart.jpg", 56)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data:\n  sources:\n    - path: {json.dumps(str(clinic_a))}\n"
        f"  trust_sources: [clinic_b]\n  holdout_dirs: [{json.dumps(str(holdout))}]\n")
    sets = [arg for override in TINY_OVERRIDES for arg in ("--set", override)]
    report = _report(str(clinic_b), "--config", str(config), *sets)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(config), "--data", str(clinic_b),
                                 "--out", str(run), *sets])
    assert result.exit_code == 0, result.output
    data = json.loads((run / "metrics.json").read_text())["data"]
    class_counts = json.loads((run / "model.json").read_text())["training"]["class_counts"]

    sources = {s["name"]: {key: s[key] for key in COUNT_KEYS} for s in report["sources"]}
    assert sources == data["sources"]
    assert sources["clinic_b"] == {"images": 6, "kept": 6, "duplicates": 0, "conflicts": 0, "holdout": 0}
    assert sources["clinic_a"] == {"images": 22, "kept": 17, "duplicates": 2, "conflicts": 2, "holdout": 1}
    assert report["cleaning"]["dropped"] == data["dropped"]
    assert report["cleaning"]["conflicts_resolved"] == data["conflicts_resolved"] == 1
    assert report["cleaning"]["kept_by_class"] == {
        name: row["train"] + row["validation"] for name, row in class_counts.items()}
    assert report["cleaning"]["dropped_by_class"] == {
        name: row["dropped"] for name, row in class_counts.items()}


def test_several_sources_title_their_combined_class_table_as_such(tmp_path):
    first = make_dataset(tmp_path / "clinic_a", per_class=2)
    second = make_dataset(tmp_path / "clinic_b", per_class=2)
    result = runner.invoke(app, ["inspect-dataset", str(first), str(second)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Classes in 2 sources combined (clinic_a, clinic_b)" in result.stdout
