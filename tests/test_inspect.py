"""`melanoma inspect-dataset`: every planted problem is found, and the folder is only read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import lesion_image, make_dataset, tree_hashes
from PIL import ImageEnhance
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.data.inspection import hamming_pairs, inspect_dataset
from melanoma_cli.data.scan import scan_dataset
from melanoma_cli.utils.errors import MelanomaError

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
    ImageEnhance.Brightness(original).enhance(1.06).save(vas / "photo_brighter.png")

    test = tmp_path / "Test"
    for label in ("melanoma", "nevus"):
        (test / label).mkdir(parents=True)
        lesion_image(label, 100).save(test / label / "own.jpg", quality=95)
    shutil.copy(nev / "nev_002.jpg", test / "melanoma" / "leaked.jpg")  # leakage, other label
    return {"train": train, "test": test, "mel": mel, "nev": nev, "vas": vas}


def _report(*args: str) -> dict:
    result = runner.invoke(app, ["inspect-dataset", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_report_finds_every_planted_problem(dirty):
    train, mel, nev, vas = dirty["train"], dirty["mel"], dirty["nev"], dirty["vas"]
    before = tree_hashes(train)
    report = _report(str(train), "--test-dir", str(dirty["test"]))
    assert report["classes"] == {"melanoma": 6, "nevus": 5, "vascular lesion": 5}
    assert report["total"] == 16
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
    planted = (str(nev / "photo.png"), str(vas / "photo_brighter.png"))
    assert planted in near
    assert near[planted]["classes"] == ["nevus", "vascular lesion"]
    assert near[planted]["distance"] <= 4
    exact = {(str(mel / "mel_000.jpg"), str(mel / "mel_copy.jpg"))}
    assert not exact & set(near), "byte-identical files belong to duplicates, not near duplicates"
    assert report["test"]["total"] == 3
    assert tree_hashes(train) == before


def test_report_summarises_images(dirty):
    report = _report(str(dirty["train"]), "--near-threshold", "0")
    assert report["formats"] == {"JPEG": 14, "PNG": 2}
    assert report["modes"] == {"RGB": 16}
    assert report["sizes"]["most_common"][0] == {"size": "24x24", "count": 14}
    assert report["sizes"]["max_width"] == 64
    assert report["share"]["melanoma"] == pytest.approx(6 / 16, abs=1e-4)
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
    report = _report(str(data), "--near-threshold", "0")
    assert report["total"] == 9 and report["imbalance_ratio"] == 1.0
    for key in ("unreadable", "duplicate_groups", "conflict_groups", "nested", "test_overlap"):
        assert report[key] == [], key
    result = runner.invoke(app, ["inspect-dataset", str(data), "--near-threshold", "0"])
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


def test_bad_plot_folder_and_threshold(dataset, tmp_path):
    result = runner.invoke(app, ["inspect-dataset", str(dataset), "--plot",
                                 str(tmp_path / "missing" / "classes.png")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["inspect-dataset", str(dataset), "--near-threshold", "65"])
    assert result.exit_code == 2


def test_perceptual_hash_only_when_asked(dataset):
    assert all(f.phash is None for f in scan_dataset(dataset).images)
    hashes = [f.phash for f in scan_dataset(dataset, perceptual_hash=True).images]
    assert all(h is not None and len(h) == 16 for h in hashes)


def test_hamming_pairs_counts_bits():
    left = np.array([0, 0b1011, 2**63], dtype=np.uint64)
    assert hamming_pairs(left, left, 3, same=True) == [(0, 1, 3), (0, 2, 1)]
    right = np.array([2**63 + 1], dtype=np.uint64)
    assert hamming_pairs(left, right, 1, same=False) == [(2, 0, 1)]



def test_an_empty_file_is_reported_as_empty(dataset):
    (dataset / "nevus" / "empty.jpg").write_bytes(b"")
    report = inspect_dataset(dataset, near_threshold=0)
    empty = {"path": str(dataset / "nevus" / "empty.jpg"), "reason": "empty file (0 bytes)"}
    assert empty in report["unreadable"]


@pytest.mark.parametrize("threshold", [-1, 65])
def test_core_refuses_a_threshold_out_of_range_with_the_project_error(dataset, threshold):
    with pytest.raises(MelanomaError, match="near_threshold must be in"):
        inspect_dataset(dataset, near_threshold=threshold)
