"""`melanoma split`: a labelled source into two parts by lesion, reproducible from its parts file."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import lesion_image
from typer.testing import CliRunner

from melanoma_cli.cli import app

runner = CliRunner()
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _csv_source(root: Path, lesions: int = 30, images_per_lesion: int = 3) -> Path:
    """A BCN-like source: images/ + labels.csv, several images per lesion (group)."""
    (root / "images").mkdir(parents=True)
    rows = []
    for lesion in range(lesions):
        label = ("melanoma", "nevus", "vascular lesion")[lesion % 3]
        for k in range(images_per_lesion):
            name = f"img_{lesion:03d}_{k}.jpg"
            lesion_image(label, lesion * 10 + k).save(root / "images" / name)
            rows.append({"file": name, "label": label, "group": f"L{lesion:03d}"})
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def _split(source: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["split", str(source), "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_lesion_is_never_split_and_parts_are_stratified_and_seeded(tmp_path):
    source = _csv_source(tmp_path / "bcn")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in source.rglob("*"))
    result = _split(source, tmp_path / "parts", "--fraction", "0.4", "--names", "adapt,test", "--seed", "3")
    parts = {row["file"]: row["part"] for row in _read(tmp_path / "parts" / "parts.csv")}
    groups = {row["file"]: row["group"] for row in _read(source / "labels.csv")}
    by_lesion: dict[str, set[str]] = {}
    for file, part in parts.items():
        by_lesion.setdefault(groups[file], set()).add(part)
    assert all(len(p) == 1 for p in by_lesion.values()) and len(by_lesion) == 30
    lesions = Counter(next(iter(p)) for p in by_lesion.values())
    assert lesions == {"adapt": 12, "test": 18}
    assert result["parts"]["adapt"]["classes"] == {"melanoma": 12, "nevus": 12, "vascular lesion": 12}
    adapt_rows = _read(tmp_path / "parts" / "adapt.csv")  # a usable source: absolute paths, labels, groups
    assert len(adapt_rows) == 36 and all(Path(row["file"]).is_absolute() for row in adapt_rows)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in source.rglob("*")) == before  # only read
    again = _split(source, tmp_path / "again", "--fraction", "0.4", "--names", "adapt,test", "--seed", "3")
    assert (tmp_path / "again" / "parts.csv").read_text() == (tmp_path / "parts" / "parts.csv").read_text()
    assert again["parts"] == {k: {**v, "labels_csv": v["labels_csv"].replace("/parts/", "/again/")}
                              for k, v in result["parts"].items()}
    other = _split(source, tmp_path / "other", "--fraction", "0.4", "--names", "adapt,test", "--seed", "4")
    assert other["parts"]["adapt"]["images"] == 36
    assert (tmp_path / "other" / "parts.csv").read_text() != (tmp_path / "parts" / "parts.csv").read_text()


def test_a_parts_file_reproduces_a_split_and_a_part_is_a_source(tmp_path):
    source = _csv_source(tmp_path / "bcn", lesions=12, images_per_lesion=1)
    _split(source, tmp_path / "first", "--seed", "1")
    result = _split(source, tmp_path / "copy", "--parts", str(tmp_path / "first" / "parts.csv"))
    assert result["seed"] is None
    for part in ("adapt", "test"):
        assert _read(tmp_path / "copy" / f"{part}.csv") == _read(tmp_path / "first" / f"{part}.csv")
    inspected = runner.invoke(app, ["inspect-dataset", str(tmp_path / "copy" / "test.csv"), "--json"])
    assert inspected.exit_code == 0, inspected.output


def test_a_lesion_pattern_keeps_a_case_s_second_image_with_the_first(tmp_path):
    source = _csv_source(tmp_path / "atlas", lesions=20, images_per_lesion=1)
    (source / "images" / "img_000_0.jpg").rename(source / "images" / "case7.jpg")
    lesion_image("melanoma", 999).save(source / "images" / "case7bis.jpg")
    rows = _read(source / "labels.csv")
    rows[0]["file"] = "case7.jpg"
    rows.append({"file": "case7bis.jpg", "label": "melanoma", "group": "case7bis.jpg"})
    with (source / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    for seed in range(6):
        _split(source, tmp_path / f"s{seed}", "--seed", str(seed), "--lesion-pattern", r"^(.+?)(bis)?\.jpg$")
        parts = {r["file"]: r["part"] for r in _read(tmp_path / f"s{seed}" / "parts.csv")}
        assert parts["case7.jpg"] == parts["case7bis.jpg"]
    parts = {r["file"]: r["part"] for r in _read(tmp_path / "s0" / "parts.csv")}
    parts["case7bis.jpg"] = "adapt" if parts["case7.jpg"] == "test" else "test"
    (tmp_path / "bad.csv").write_text("file,part\n" + "".join(f"{f},{p}\n" for f, p in parts.items()))
    result = runner.invoke(app, ["split", str(source), "--out", str(tmp_path / "x"), "--parts",
                                 str(tmp_path / "bad.csv"), "--lesion-pattern", r"^(.+?)(bis)?\.jpg$"])
    assert result.exit_code == 1
    assert "puts images of one lesion ('case7" in result.stderr and "in different parts" in result.stderr


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text + "ghost.jpg,test\n", "lists 'ghost.jpg', which is not in it"),
    (lambda text: "\n".join(text.splitlines()[:-1]) + "\n", "has no row for"),
    (lambda text: text.replace("file,part", "name,part"), "needs the columns 'file' and 'part'"),
])
def test_a_parts_file_that_does_not_fit_is_one_line(tmp_path, edit, message):
    source = _csv_source(tmp_path / "bcn", lesions=6, images_per_lesion=1)
    _split(source, tmp_path / "first")
    (tmp_path / "bad.csv").write_text(edit((tmp_path / "first" / "parts.csv").read_text()))
    result = runner.invoke(app, ["split", str(source), "--out", str(tmp_path / "x"), "--parts",
                                 str(tmp_path / "bad.csv")])
    assert result.exit_code == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_split_never_writes_into_the_source_or_over_a_folder(tmp_path):
    source = _csv_source(tmp_path / "bcn", lesions=6, images_per_lesion=1)
    inside = runner.invoke(app, ["split", str(source), "--out", str(source / "parts")])
    assert inside.exit_code == 1 and "is never written to" in inside.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    busy = runner.invoke(app, ["split", str(source), "--out", str(tmp_path / "busy")])
    assert busy.exit_code == 1 and "--overwrite" in busy.stderr


def test_the_committed_derm7pt_split_is_by_case_and_40_percent():
    parts = {row["file"]: row["part"] for row in _read(BENCHMARKS / "derm7pt_parts.csv")}
    assert len(parts) == 963
    cases = {}
    for file, part in parts.items():
        cases.setdefault(file.removesuffix(".jpg").removesuffix("bis"), set()).add(part)
    assert all(len(p) == 1 for p in cases.values())
    assert Counter(parts.values()) == {"selection": 386, "report": 577}


def test_training_s_split_of_a_bcn_like_source_never_splits_a_lesion(tmp_path):
    from melanoma_cli.config import SourceConfig
    from melanoma_cli.data.scan import scan_sources
    from melanoma_cli.data.split import split_dataset

    source = _csv_source(tmp_path / "bcn", lesions=30, images_per_lesion=3)
    scan = scan_sources([SourceConfig(path=str(source))], perceptual_hash=False)
    for seed in range(3):
        split = split_dataset(scan, 0.3, seed, near_duplicate_distance=None)
        train = {f.group for f in split.train}
        validation = {f.group for f in split.validation}
        assert train and validation and not train & validation
        assert len(split.train) + len(split.validation) == 90
