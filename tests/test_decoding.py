"""Decoding edges: integer images clipped, the pixel limit, what counts as an unreadable file."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from conftest import make_dataset
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.cli import app
from melanoma_cli.data import scan
from melanoma_cli.data.images import MAX_PIXELS, decode_many, load_rgb, open_image

runner = CliRunner()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 1-bit pixels (and holds no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize(("values", "grey"), [
    ([[-70_000, -1, 0, 128], [255, 256, 65_535, 2**31 - 1]], [[0, 0, 0, 0], [1, 1, 255, 255]]),  # 16-bit
    ([[-5, 0, 100, 255]], [[0, 0, 100, 255]]),  # 8-bit range
])
def test_32_bit_integer_images_are_clipped_not_wrapped(values, grey, tmp_path):
    path = tmp_path / "signed.tif"  # TIFF keeps signed 32-bit values (PNG has no negative ones)
    Image.fromarray(np.array(values, np.int32)).save(path)
    assert Image.open(path).mode == "I"
    rgb = load_rgb(path)
    assert rgb.dtype == np.uint8 and (rgb == np.array(grey, np.uint8)[..., None]).all()


def test_a_picture_over_the_pixel_limit_is_refused_from_its_header_whatever_pillow_is_set_to(monkeypatch):
    data = png_declaring(20_000, 20_000)
    assert MAX_PIXELS < 20_000 * 20_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own check off, as the CLI sets it
    with pytest.raises(Image.DecompressionBombError, match="20000x20000 pixels"):
        open_image(data)


def test_too_large_is_a_one_line_reason_naming_the_file(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    huge = data / "nevus" / "huge.png"
    huge.write_bytes(png_declaring(20_000, 20_000))
    result = runner.invoke(app, ["inspect-dataset", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert {"path": str(huge), "reason": "image too large"} in json.loads(result.stdout)["unreadable"]


def test_parallel_decoding_leaves_the_warning_filters_alone(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for n in range(32):
        paths.append(tmp_path / f"{n}.png")
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(paths[-1])
    before = list(warnings.filters)
    try:
        for _ in range(10):  # threads that swapped the filters left them changed in most rounds
            images, _, failures = decode_many(paths, 16)
            assert images.shape == (32, 16, 16, 3) and not failures
            assert warnings.filters == before
    finally:
        warnings.filters[:] = before


@pytest.mark.slow
def test_pillow_settings_are_left_alone_on_import_and_large_pictures_read_without_warnings(tmp_path):
    """In a fresh process: importing the decoder changes no Pillow setting, and a 90-megapixel JPEG
    (over Pillow's default warning limit, under ours) is read by the CLI without a warning."""
    data = make_dataset(tmp_path / "data", per_class=2)
    Image.new("L", (9_500, 9_500), 120).save(data / "nevus" / "large.jpg", quality=20)
    script = (
        "import sys\n"
        "from PIL import Image\n"
        "default = Image.MAX_IMAGE_PIXELS\n"
        "import melanoma_cli.data.images, melanoma_cli.data.scan, melanoma_cli.data.dedupe\n"
        "assert Image.MAX_IMAGE_PIXELS == default, Image.MAX_IMAGE_PIXELS\n"
        "from melanoma_cli.cli import main\n"
        f"sys.argv = ['melanoma', 'inspect-dataset', {str(data)!r}, '--json']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unreadable"] == []
    assert "Warning" not in done.stderr, done.stderr


@pytest.mark.parametrize("failure", [RuntimeError("a bug"), MemoryError()])
def test_only_decode_errors_make_a_file_unreadable(failure, dataset, monkeypatch):
    def broken(image: Image.Image) -> bytes:
        raise failure

    monkeypatch.setattr(scan, "thumbnail", broken)
    with pytest.raises(type(failure)):
        scan.scan_dataset(dataset, perceptual_hash=True)
