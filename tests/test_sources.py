"""Several sources: labels CSVs, de-duplication across sources, conflicts, grouped splits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_OVERRIDES, lesion_image, make_dataset
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.data.scan import scan_sources
from melanoma_cli.data.split import split_dataset
from melanoma_cli.utils.errors import MelanomaError

runner = CliRunner()
TINY = [arg for override in TINY_OVERRIDES for arg in ("--set", override)]


def write_csv_source(root: Path, rows: list[tuple[str, str, str | None]], size: int = 24) -> Path:
    """images/ + labels.csv; each row (file, label, group) gets its own synthetic lesion."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "label", "group"])
        for n, (file, label, group) in enumerate(rows):
            lesion_image(label, 1000 + n, size).save(root / "images" / file)
            writer.writerow([file, label, group or ""])
    return root


def scan(*specs: SourceConfig):
    return scan_sources(list(specs))


def test_a_labels_csv_source_is_recognised_without_settings(tmp_path):
    source = write_csv_source(tmp_path / "csvset", [("a.jpg", "melanoma", "L1"), ("b.jpg", "nevus", None)])
    result = scan(SourceConfig(str(source)))
    assert result.sources[0].kind == "csv" and result.sources[0].name == "csvset"
    assert sorted((i.path.name, i.label, i.group) for i in result.images) == [
        ("a.jpg", "melanoma", "L1"), ("b.jpg", "nevus", None)]


def test_csv_columns_and_label_map_are_configurable(tmp_path):
    root = tmp_path / "other"
    (root / "pics").mkdir(parents=True)
    lesion_image("nevus", 1).save(root / "pics" / "x.png")
    lesion_image("melanoma", 2).save(root / "pics" / "y.png")
    lesion_image("nevus", 3).save(root / "pics" / "z.png")
    (root / "meta.csv").write_text("image,dx,lesion\nx.png,nv,1\ny.png,mel,2\nz.png,misc,3\n")
    spec = SourceConfig(str(root), labels="meta.csv", images="pics", file_column="image",
                        label_column="dx", group_column="lesion",
                        label_map={"nv": "nevus", "mel": "melanoma", "misc": None})
    result = scan(spec)
    assert sorted((i.path.name, i.label, i.group) for i in result.images) == [
        ("x.png", "nevus", "1"), ("y.png", "melanoma", "2")]
    assert result.sources[0].skipped_rows == 1


@pytest.mark.parametrize("case, text, expected", [
    ("no-label-column", "file,diagnosis\na.jpg,nevus\n", "has no column 'label'"),
    ("missing-file", "file,label\na.jpg,nevus\nghost.jpg,nevus\n", "row 3: image"),
    ("empty-label", "file,label\na.jpg,\n", "row 2: empty 'label'"),
    ("listed-twice", "file,label\na.jpg,nevus\na.jpg,melanoma\n", "row 3: 'a.jpg' is listed twice"),
])
def test_broken_csv_sources_are_one_line_errors_naming_the_row(tmp_path, case, text, expected):
    root = tmp_path / "broken"
    (root / "images").mkdir(parents=True)
    lesion_image("nevus", 0).save(root / "images" / "a.jpg")
    (root / "labels.csv").write_text(text)
    result = runner.invoke(app, ["train", "--data", str(root), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 1, result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error:") and str(root / "labels.csv") in error and expected in error
    assert not (tmp_path / "run").exists()


def test_unknown_csv_labels_are_an_error_when_classes_are_configured(tmp_path):
    source = write_csv_source(tmp_path / "s", [("a.jpg", "melanoma", None), ("b.jpg", "lentigo", None)])
    message = r"label\(s\) not in data.classes: 'lentigo' \(first at row 3, 'b.jpg'\)"
    with pytest.raises(MelanomaError, match=message):
        scan_sources([SourceConfig(str(source))], classes=["melanoma", "nevus"])


def _resized_copy(src: Path, dst: Path, size: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(dst, quality=90)


def test_the_same_picture_in_two_sources_is_kept_once(tmp_path):
    """Found by ISIC id (other size, other format) and by content under another name."""
    folders = make_dataset(tmp_path / "folders", per_class=6, size=64)
    csv_root = tmp_path / "csvset"
    (csv_root / "images").mkdir(parents=True)
    mel = folders / "melanoma"
    (mel / "mel_000.jpg").rename(mel / "ISIC_0000001.jpg")
    _resized_copy(mel / "ISIC_0000001.jpg", csv_root / "images" / "ISIC_0000001.png", 48)
    _resized_copy(mel / "mel_001.jpg", csv_root / "images" / "renamed.jpg", 40)
    lesion_image("nevus", 99, 64).save(csv_root / "images" / "own.jpg")
    (csv_root / "labels.csv").write_text(
        "file,label\nISIC_0000001.png,melanoma\nrenamed.jpg,melanoma\nown.jpg,nevus\n")
    split = split_dataset(scan(SourceConfig(str(folders)), SourceConfig(str(csv_root))), 0.25, seed=3,
                          near_duplicate_distance=4)
    kept = [f.path for f in split.train + split.validation]
    assert len(kept) == 18 + 3 - 2
    assert split.sources["csvset"] == {"images": 3, "kept": 1, "duplicates": 2, "conflicts": 0, "holdout": 0}
    assert mel / "ISIC_0000001.jpg" in kept and mel / "mel_001.jpg" in kept  # the larger copies
    # different lesions that merely look alike are not merged: every folder image survives
    assert split.sources["folders"]["kept"] == 18


def _conflicting_sources(tmp_path: Path) -> tuple[SourceConfig, SourceConfig]:
    folders = make_dataset(tmp_path / "folders", per_class=5)
    (folders / "nevus" / "nev_000.jpg").rename(folders / "nevus" / "ISIC_0000042.jpg")
    csv_root = tmp_path / "trusted"
    (csv_root / "images").mkdir(parents=True)
    _resized_copy(folders / "nevus" / "ISIC_0000042.jpg", csv_root / "images" / "ISIC_0000042.jpg", 24)
    lesion_image("melanoma", 77).save(csv_root / "images" / "m.jpg")
    (csv_root / "labels.csv").write_text("file,label\nISIC_0000042.jpg,vascular lesion\nm.jpg,melanoma\n")
    return SourceConfig(str(folders)), SourceConfig(str(csv_root))


def test_label_conflicts_are_dropped_by_default(tmp_path):
    sources = _conflicting_sources(tmp_path)
    split = split_dataset(scan(*sources), 0.25, seed=1)
    names = {f.path.name for f in split.train + split.validation}
    assert "ISIC_0000042.jpg" not in names
    assert split.dropped["label_conflicts"] == 2
    assert split.sources["trusted"]["conflicts"] == 1 and split.sources["folders"]["conflicts"] == 1


def test_a_trusted_source_settles_label_conflicts(tmp_path):
    sources = _conflicting_sources(tmp_path)
    split = split_dataset(scan(*sources), 0.25, seed=1, trust_sources=["elsewhere", "trusted", "folders"])
    settled = [f for f in split.train + split.validation if f.path.name == "ISIC_0000042.jpg"]
    assert [f.label for f in settled] == ["vascular lesion"]
    assert settled[0].path.parent.parent.name == "trusted"  # its copy is the one kept, too
    assert split.conflicts_resolved == 1 and split.dropped["label_conflicts"] == 0


def test_a_trusted_source_copy_is_kept_even_when_another_is_larger(tmp_path):
    folders = make_dataset(tmp_path / "folders", per_class=5)
    csv_root = tmp_path / "original"
    (csv_root / "images").mkdir(parents=True)
    larger, original = folders / "melanoma" / "ISIC_0000007.jpg", csv_root / "images" / "ISIC_0000007.jpg"
    (folders / "melanoma" / "mel_000.jpg").rename(larger)
    _resized_copy(larger, original, 20)  # the same ISIC id: the same picture
    (csv_root / "labels.csv").write_text("file,label\nISIC_0000007.jpg,melanoma\n")
    sources = SourceConfig(str(folders)), SourceConfig(str(csv_root))
    for trust, kept in ([], larger), (["original"], original):
        split = split_dataset(scan(*sources), 0.25, seed=1, near_duplicate_distance=4, trust_sources=trust)
        paths = {f.path for f in split.train + split.validation}
        assert kept in paths and len(paths) == 15


def test_images_of_one_lesion_never_straddle_the_split(tmp_path):
    rows = [(f"{label[:3]}{lesion}_{view}.jpg", label, f"{label}-{lesion}")
            for label in ("melanoma", "nevus") for lesion in range(6) for view in range(3)]
    source = SourceConfig(str(write_csv_source(tmp_path / "lesions", rows)))
    scanned = scan(source)
    for seed in range(6):
        split = split_dataset(scanned, 0.34, seed=seed)
        train_groups = {f.group for f in split.train}
        val_groups = {f.group for f in split.validation}
        assert train_groups and val_groups and not train_groups & val_groups
        assert len(split.train) + len(split.validation) == 36


def test_a_validation_source_replaces_the_random_split(tmp_path):
    folders = make_dataset(tmp_path / "clinic_a", per_class=6)
    labels = ["melanoma", "nevus", "vascular lesion"] * 2
    rows = [(f"b{n}.jpg", label, None) for n, label in enumerate(labels)]
    other = write_csv_source(tmp_path / "clinic_b", rows)
    split = split_dataset(scan(SourceConfig(str(folders)), SourceConfig(str(other))), 0.2, seed=0,
                          validation_source="clinic_b")
    assert {f.source for f in split.validation} == {"clinic_b"} and len(split.validation) == 6
    assert {f.source for f in split.train} == {"clinic_a"} and len(split.train) == 18
    with pytest.raises(MelanomaError, match="no source named 'clinic_c'"):
        split_dataset(scan(SourceConfig(str(folders))), 0.2, seed=0, validation_source="clinic_c")


def test_train_on_two_sources_records_them_and_their_counts(tmp_path):
    folders = make_dataset(tmp_path / "folders", per_class=8)
    (folders / "nevus" / "nev_000.jpg").rename(folders / "nevus" / "ISIC_0000005.jpg")
    labels = ["melanoma", "nevus", "vascular lesion"] * 3
    rows = [(f"c{n}.jpg", label, None) for n, label in enumerate(labels)]
    csv_root = write_csv_source(tmp_path / "csvset", rows)
    _resized_copy(folders / "nevus" / "ISIC_0000005.jpg", csv_root / "images" / "ISIC_0000005.jpg", 20)
    with (csv_root / "labels.csv").open("a") as handle:
        handle.write("ISIC_0000005.jpg,nevus,\n")
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", f"clinic={folders}", "--data", str(csv_root),
                                 "--out", str(run_dir), "--json", *TINY])
    assert result.exit_code == 0, result.output
    info = json.loads((run_dir / "model.json").read_text())
    assert [s["name"] for s in info["training"]["sources"]] == ["clinic", "csvset"]
    counts = json.loads((run_dir / "metrics.json").read_text())["data"]["sources"]
    assert counts["clinic"]["kept"] == 24 and counts["csvset"]["duplicates"] == 1
    assert counts["csvset"]["kept"] == 9


def test_config_sources_are_used_without_data_option(tmp_path):
    folders = make_dataset(tmp_path / "folders", per_class=6)
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  sources:\n    - path: {json.dumps(str(folders))}\n      name: mine\n")
    prepared = load_config(config, TINY_OVERRIDES)
    assert prepared.data.sources[0].name == "mine"
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 0, result.output


def test_inspect_reports_sources_and_conflicts_across_them(tmp_path):
    folders, trusted = _conflicting_sources(tmp_path)
    result = runner.invoke(app, ["inspect-dataset", folders.path, trusted.path, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["sources"]] == ["folders", "trusted"]
    assert report["sources"][1]["conflicts"] == 1
    (conflict,) = report["label_conflicts"]
    assert sorted(conflict["labels"]) == ["nevus", "vascular lesion"]
    assert sorted(conflict["sources"]) == ["folders", "trusted"]
    assert np.sum([s["images"] for s in report["sources"]]) == 17
