"""Dataset scanning and the clean, seeded, stratified split."""

from __future__ import annotations

import shutil

import pytest
from conftest import make_dataset

from melanoma_cli.data.dedupe import HoldoutIndex
from melanoma_cli.data.scan import scan_dataset
from melanoma_cli.data.split import split_dataset
from melanoma_cli.utils.errors import MelanomaError


def test_scan_finds_classes_in_sorted_order_and_counts(dataset):
    scan = scan_dataset(dataset)
    assert scan.classes == ["melanoma", "nevus", "vascular lesion"]
    assert scan.counts() == {"melanoma": 8, "nevus": 8, "vascular lesion": 8}
    assert not scan.unreadable


def test_nested_files_are_not_swept_in(dataset):
    nested = dataset / "nevus" / "output"
    nested.mkdir()
    shutil.copy(dataset / "melanoma" / "mel_000.jpg", nested / "generated.jpg")
    scan = scan_dataset(dataset)
    assert scan.counts()["nevus"] == 8
    assert scan.nested == [nested]


def test_unreadable_files_are_reported_not_used(dataset):
    (dataset / "nevus" / "notes.jpg").write_text("not an image")
    data = (dataset / "nevus" / "nev_000.jpg").read_bytes()
    (dataset / "nevus" / "cut.jpg").write_bytes(data[: len(data) // 2])
    scan = scan_dataset(dataset)
    reasons = {p.path.name: p.reason for p in scan.unreadable}
    assert set(reasons) == {"notes.jpg", "cut.jpg"}
    assert "not an image" in reasons["notes.jpg"]
    assert scan.counts()["nevus"] == 8


def test_split_is_stratified_and_deterministic(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=20)
    scan = scan_dataset(data)
    first = split_dataset(scan, 0.25, seed=7)
    again = split_dataset(scan, 0.25, seed=7)
    other = split_dataset(scan, 0.25, seed=8)
    assert [f.path for f in first.validation] == [f.path for f in again.validation]
    assert [f.path for f in first.validation] != [f.path for f in other.validation]
    assert first.summary()["validation"] == {"melanoma": 5, "nevus": 5, "vascular lesion": 5}
    assert not {f.path for f in first.train} & {f.path for f in first.validation}


def test_conflicts_are_dropped_and_duplicates_never_straddle(dataset):
    shutil.copy(dataset / "melanoma" / "mel_000.jpg", dataset / "nevus" / "conflict.jpg")
    for i in range(3):
        shutil.copy(dataset / "nevus" / "nev_001.jpg", dataset / "nevus" / f"copy{i}.jpg")
    split = split_dataset(scan_dataset(dataset), 0.25, seed=1)
    assert split.dropped["label_conflicts"] == 2
    assert split.dropped["duplicate_copies"] == 3
    names = {f.path.name for f in split.train + split.validation}
    assert "mel_000.jpg" not in names and "conflict.jpg" not in names
    hashes = [f.sha256 for f in split.train + split.validation]
    assert len(hashes) == len(set(hashes))


def test_conflicts_kept_on_request_stay_on_one_side(dataset):
    shutil.copy(dataset / "melanoma" / "mel_000.jpg", dataset / "nevus" / "conflict.jpg")
    for seed in range(5):
        split = split_dataset(scan_dataset(dataset), 0.25, seed=seed, drop_conflicts=False)
        train = {f.sha256 for f in split.train}
        assert not train & {f.sha256 for f in split.validation}


def test_holdout_content_is_dropped(dataset):
    scan = scan_dataset(dataset)
    held = {scan.images[0].sha256}
    split = split_dataset(scan, 0.25, seed=1, holdout=HoldoutIndex(sha256=held))
    assert split.dropped["holdout_overlap"] == 1
    assert held.isdisjoint(f.sha256 for f in split.train + split.validation)


def test_too_small_class_is_an_error(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=6)
    for path in list((data / "nevus").iterdir())[1:]:
        path.unlink()
    with pytest.raises(MelanomaError, match="'nevus' \\(1\\)"):
        split_dataset(scan_dataset(data), 0.25, seed=1)


@pytest.mark.parametrize("case", ["missing", "file", "empty"])
def test_unusable_roots_are_errors(tmp_path, case):
    root = tmp_path / "root"
    if case == "file":
        root.write_text("x")
    elif case == "empty":
        root.mkdir()
    expected = {"missing": "does not exist", "file": "is a file", "empty": "no class subfolders"}
    with pytest.raises(MelanomaError, match=expected[case]):
        scan_dataset(root)
