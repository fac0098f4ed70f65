"""`melanoma rebalance`: writes only into --out, reaches the target, is seeded, refuses danger."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import lesion_image, tree_hashes
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import RebalanceConfig
from melanoma_cli.data import rebalance as rebalance_module
from melanoma_cli.data.scan import scan_dataset
from melanoma_cli.utils.errors import MelanomaError

runner = CliRunner()
GENERATED = re.compile(r"aug_.+_\d{4}\.jpg")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """An imbalanced dataset (6/3/2, one PNG) with an unreadable file and a nested folder."""
    root = tmp_path / "Train"
    for label, count in (("melanoma", 6), ("nevus", 3), ("vascular lesion", 2)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            lesion_image(label, i).save(root / label / f"{label[:3]}_{i}.jpg", quality=95)
    lesion_image("nevus", 9, size=40).save(root / "nevus" / "wide.png")
    (root / "nevus" / "notes.jpg").write_text("not an image")
    (root / "melanoma" / "output").mkdir()
    lesion_image("melanoma", 8).save(root / "melanoma" / "output" / "old_aug.jpg")
    return root


def _rebalance(*args: str, code: int = 0):
    result = runner.invoke(app, ["rebalance", *args])
    assert result.exit_code == code, result.output
    return result


def _images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_reaches_target_copies_originals_and_leaves_source_untouched(source, tmp_path):
    before = tree_hashes(source)
    out = tmp_path / "balanced"
    result = _rebalance(str(source), "--out", str(out), "--target", "5", "--seed", "7", "--json")
    assert tree_hashes(source) == before
    summary = json.loads(result.stdout)
    assert summary["classes"] == {
        "melanoma": {"before": 6, "generated": 0, "after": 6},
        "nevus": {"before": 4, "generated": 1, "after": 5},
        "vascular lesion": {"before": 2, "generated": 3, "after": 5},
    }
    assert [Path(s["path"]).name for s in summary["skipped"]] == ["notes.jpg"]
    assert summary["not_copied"] == [str(source / "melanoma" / "output")]
    scan = scan_dataset(out)
    assert scan.counts() == {"melanoma": 6, "nevus": 5, "vascular lesion": 5}
    assert not scan.unreadable and not scan.nested
    copied = tree_hashes(out)
    for name, digest in before.items():
        if name.endswith(("notes.jpg", "old_aug.jpg")):
            assert name not in copied
        else:
            assert copied[name] == digest, name
    new = [p for p in (out / "vascular lesion").iterdir() if p.name not in
           _images(source / "vascular lesion")]
    assert len(new) == 3 and all(GENERATED.fullmatch(p.name) for p in new)
    assert (out / rebalance_module.MARKER).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"


def test_default_target_is_the_largest_class_and_table(source, tmp_path):
    result = _rebalance(str(source), "--out", str(tmp_path / "out"))
    assert scan_dataset(tmp_path / "out").counts() == {
        "melanoma": 6, "nevus": 6, "vascular lesion": 6
    }
    assert "generated" in result.stdout and "total" in result.stdout


def test_same_seed_same_bytes_other_seed_other_images(source, tmp_path):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        _rebalance(str(source), "--out", str(tmp_path / name), "--target", "6", "--seed", seed)
    a, b, c = (tree_hashes(tmp_path / name) for name in "abc")
    assert a == b
    generated = [name for name in a if GENERATED.fullmatch(Path(name).name)]
    assert generated and any(a[name] != c.get(name) for name in generated)


@pytest.mark.parametrize("where", ["source", "inside", "parent"])
def test_refuses_out_overlapping_the_source(source, where):
    out = {"source": source, "inside": source / "nevus" / "more", "parent": source.parent}[where]
    before = tree_hashes(source)
    result = _rebalance(str(source), "--out", str(out), code=1)
    assert "inside" in result.output
    assert tree_hashes(source) == before
    assert not (source / "nevus" / "more").exists()


def test_refuses_out_through_a_symlink_into_the_source(source, tmp_path):
    (tmp_path / "link").symlink_to(source)
    _rebalance(str(source), "--out", str(tmp_path / "link" / "balanced"), code=1)
    assert not (source / "balanced").exists()


def test_non_empty_out_needs_overwrite_and_must_be_a_previous_output(source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = _rebalance(str(source), "--out", str(out), code=1)
    assert "--overwrite" in result.output
    result = _rebalance(str(source), "--out", str(out), "--overwrite", code=1)
    assert "not a previous rebalance output" in result.output
    assert (out / "precious.txt").read_text() == "keep me"

    previous = tmp_path / "previous"
    _rebalance(str(source), "--out", str(previous), "--target", "8")
    _rebalance(str(source), "--out", str(previous), "--target", "4", code=1)
    _rebalance(str(source), "--out", str(previous), "--target", "4", "--overwrite")
    assert scan_dataset(previous).counts() == {"melanoma": 6, "nevus": 4, "vascular lesion": 4}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_empty_out_folder_is_used(source, tmp_path):
    (tmp_path / "empty").mkdir()
    _rebalance(str(source), "--out", str(tmp_path / "empty"), "--target", "3")
    assert scan_dataset(tmp_path / "empty").counts()["vascular lesion"] == 3


def test_operations_and_target_come_from_the_config(source, tmp_path):
    _rebalance(str(source), "--out", str(tmp_path / "a"), "--config", "final.yaml",
               "--set", "rebalance.target=5", "--set", "rebalance.max_rotation=10")
    assert scan_dataset(tmp_path / "a").counts()["vascular lesion"] == 5
    marker = json.loads((tmp_path / "a" / rebalance_module.MARKER).read_text())
    assert marker["operations"]["max_rotation"] == 10 and marker["seed"] == 123
    _rebalance(str(source), "--out", str(tmp_path / "b"), "--set", "rebalance.target=5",
               "--target", "3")
    assert scan_dataset(tmp_path / "b").counts()["vascular lesion"] == 3
    result = _rebalance(str(source), "--out", str(tmp_path / "c"), "--set",
                        "rebalance.max_rotaton=10", code=1)
    assert "unknown config key 'rebalance.max_rotaton'" in result.output


def test_generated_names_never_replace_an_original(tmp_path):
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    lesion_image("a", 0).save(source / "a" / "x.jpg")
    lesion_image("a", 1).save(source / "a" / "aug_x_0000.jpg")  # looks like a generated name
    before = tree_hashes(source)
    config = RebalanceConfig()
    rebalance_module.rebalance_folder(source, tmp_path / "out", 6, config, seed=1)
    out = tmp_path / "out" / "a"
    assert len(_images(out)) == 6
    assert tree_hashes(out)["aug_x_0000.jpg"] == before["a/aug_x_0000.jpg"]


def test_an_interrupted_run_leaves_nothing(source, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rebalance_module, "generate_samples", fail)
    with pytest.raises(KeyboardInterrupt):
        rebalance_module.rebalance_folder(source, tmp_path / "out", 9, RebalanceConfig(), 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Train"]


def test_core_refuses_source_inside_out(source):
    with pytest.raises(MelanomaError, match="inside the output folder"):
        rebalance_module.check_destination(source, source.parent, overwrite=True)



def test_rebalance_reports_progress_as_status_events(source, tmp_path):
    events: list[tuple[str, dict]] = []
    rebalance_module.rebalance_folder(source, tmp_path / "out", 6, RebalanceConfig(), seed=1,
                                      progress=lambda kind, values: events.append((kind, values)))
    assert events[0] == ("status", {"message": f"scanning {source}"})
    assert {kind for kind, _ in events} == {"status"}
    assert ("status", {"message": "nevus: copying 4, generating 2"}) in events


def test_labels_csv_source_and_folders_without_a_readable_image_are_refused(tmp_path):
    csv_source = tmp_path / "ham"
    (csv_source / "images").mkdir(parents=True)
    lesion_image("nevus", 0).save(csv_source / "images" / "a.jpg")
    (csv_source / "labels.csv").write_text("file,label\na.jpg,nevus\n")
    unreadable = tmp_path / "unreadable"
    (unreadable / "nevus").mkdir(parents=True)
    (unreadable / "nevus" / "x.jpg").write_text("not an image")
    for source, message in ((csv_source, "is a labels-CSV source (labels.csv beside images/)"),
                            (unreadable, "has no readable images (1 unreadable file(s)")):
        out = tmp_path / f"out-{source.name}"
        result = _rebalance(str(source), "--out", str(out), code=1)
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("Error: ") and f"'{source}'" in line and message in line
        assert not out.exists()
