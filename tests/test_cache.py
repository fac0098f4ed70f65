"""The decoded image cache (`data.cache: ram | disk`) and the pipeline that reads it by index."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_OVERRIDES, make_dataset, tree_hashes
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.config import SourceConfig, load_config
from melanoma_cli.data.cache import CachedImages, ImageCache
from melanoma_cli.data.pipeline import build_augmenter
from melanoma_cli.data.pipeline import make_dataset as make_pipeline
from melanoma_cli.data.preparation import prepare_data
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.tensorflow import import_tensorflow


def prepared(data: Path, cache: str, *overrides: str):
    config = load_config(None, [*TINY_OVERRIDES, "augment.enabled=true", f"data.cache={cache}",
                                *overrides])
    return config, prepare_data(config, [SourceConfig(str(data))])


def two_epochs(config, images, labels) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every training batch of two epochs: seeded shuffle and augmentation."""
    dataset = make_pipeline(images, labels, 3, config.data.batch_size, shuffle=True,
                            augmenter=build_augmenter(config.augment, config.seed), seed=config.seed)
    return [(np.asarray(x), np.asarray(y)) for _ in range(2) for x, y in dataset]


def test_disk_cache_gives_the_batches_of_the_ram_cache(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=6)
    before = tree_hashes(data)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    config, in_ram = prepared(data, "ram")
    _, on_disk = prepared(data, "disk")
    assert in_ram.train_images.cache.kind == "ram" and on_disk.train_images.cache.kind == "disk"
    assert isinstance(on_disk.train_images.cache.array, np.memmap)
    maps = Path("/proc/self/maps").read_text()
    assert str(temporary) in maps  # mapped from a file in the temporary folder...
    assert not list(temporary.iterdir())  # ...that has no name: nothing can be left behind
    np.testing.assert_array_equal(np.asarray(on_disk.train_images), np.asarray(in_ram.train_images))
    np.testing.assert_array_equal(on_disk.train_labels, in_ram.train_labels)

    ram_batches = two_epochs(config, in_ram.train_images, in_ram.train_labels)
    disk_batches = two_epochs(config, on_disk.train_images, on_disk.train_labels)
    assert len(ram_batches) == 2 * int(np.ceil(len(in_ram.train_labels) / 8))
    assert not np.array_equal(ram_batches[0][1], ram_batches[len(ram_batches) // 2][1])  # reshuffled
    for (ram_x, ram_y), (disk_x, disk_y) in zip(ram_batches, disk_batches, strict=True):
        np.testing.assert_array_equal(ram_x, disk_x)
        np.testing.assert_array_equal(ram_y, disk_y)
    # the batches are the cached images, augmented: the same draws on a plain in-memory array
    plain = two_epochs(config, np.asarray(in_ram.train_images), in_ram.train_labels)
    np.testing.assert_array_equal(plain[0][0], ram_batches[0][0])

    assert tree_hashes(data) == before and not list(data.rglob("*.npy"))


def test_pipeline_reads_by_index_so_its_graph_holds_no_image():
    """A pool past a graph-size limit (here 100 KB; TensorFlow's is 2 GB) still makes a dataset:
    the images are read by index, never embedded in the graph as `from_tensor_slices` does."""
    tf = import_tensorflow()
    limit = 100_000
    images = np.random.default_rng(0).integers(0, 256, (400, 24, 24, 3), dtype=np.uint8)
    assert images.nbytes > 6 * limit
    dataset = make_pipeline(images, np.arange(400) % 3, 3, 32, shuffle=True, seed=1)
    policy = tf.data.experimental.ExternalStatePolicy.WARN
    assert len(dataset._as_serialized_graph(external_state_policy=policy).numpy()) < limit
    seen = np.concatenate([np.asarray(x) for x, _ in dataset])
    assert sorted(map(bytes, seen.astype(np.uint8))) == sorted(map(bytes, images))  # each image once


def test_cache_rows_index_like_an_array_and_grow_on_disk():
    images = np.random.default_rng(1).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    for kind in ("ram", "disk"):
        cache = ImageCache(5, 4, kind)
        cache.array[:] = images
        view = CachedImages(cache, np.array([4, 0, 2]))
        assert view.shape == (3, 4, 4, 3) and len(view) == 3
        np.testing.assert_array_equal(view[1:], images[[0, 2]])
        np.testing.assert_array_equal(view[np.array([True, False, True])], images[[4, 2]])
        np.testing.assert_array_equal(np.stack(list(view)), images[[4, 0, 2]])
        rows = cache.extend(images[:2] // 2)
        assert list(rows) == [5, 6] and len(cache) == 7
        np.testing.assert_array_equal(view[0], images[4])  # old rows kept
        np.testing.assert_array_equal(cache.array[5:], images[:2] // 2)


def test_rebalancing_appends_to_a_disk_cache(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    _, result = prepared(data, "disk", "rebalance.enabled=true", "rebalance.target=8",
                         "data.validation_split=0.34")
    counts = np.bincount(result.train_labels, minlength=3)
    assert (counts >= 8).all() and sum(result.generated.values()) > 0
    assert len(result.train_images) == len(result.train_labels)
    added = result.train_images[-sum(result.generated.values()):]
    assert added.std() > 0  # generated images, not empty rows


@pytest.mark.slow
def test_training_from_a_disk_cache_matches_ram_through_the_cli(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    runner, summaries = CliRunner(), {}
    for kind in ("ram", "disk"):
        result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / kind), "--json",
                                     *[arg for o in [*TINY_OVERRIDES, "augment.enabled=true",
                                                     f"data.cache={kind}"] for arg in ("--set", o)]])
        assert result.exit_code == 0, result.output
        summaries[kind] = json.loads(result.stdout)
    assert summaries["disk"]["validation"] == summaries["ram"]["validation"]
    assert "cache: disk" in (tmp_path / "disk" / "config.yaml").read_text()


def test_no_room_for_a_disk_cache_is_a_one_line_error(monkeypatch):
    def disk_full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.posix_fallocate", disk_full)
    with pytest.raises(MelanomaError, match=r"^no room for the image cache \(0.0 GB\) in temporary "
                                            r"folder '.*' \(No space left on device\); free space"):
        ImageCache(10, 8, "disk")


def test_unknown_cache_kind_is_a_one_line_error(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"),
                                      "--set", "data.cache=gpu"])
    assert result.exit_code == 1
    assert "config key 'data.cache': expected one of 'ram' or 'disk', got 'gpu'" in result.output
