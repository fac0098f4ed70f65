"""Decoding edges: integer images clipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from melanoma_cli.data.images import load_rgb

runner = CliRunner()


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
