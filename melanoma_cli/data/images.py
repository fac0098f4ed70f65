"""Reading any image file into the RGB uint8 array the models take (one decoder for train and predict)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from melanoma_cli.utils.errors import first_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DECODE_WORKERS = min(8, (os.cpu_count() or 1) * 2)
MAX_PIXELS = 200_000_000  # dermoscopes export large files; refuse only absurd ones
# What a file that cannot be used as an image raises while it is read and decoded
DECODE_ERRORS = (OSError, ValueError, SyntaxError, RecursionError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Unreadable:
    """A file that could not be used as an image, and why."""

    path: Path
    reason: str


def describe_error(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (unrecognised format)"
    if isinstance(exc, Image.DecompressionBombError):
        return "image too large"
    if isinstance(exc, OSError) and exc.strerror:  # e.g. a looping link: no repeated path
        return exc.strerror
    text = first_line(exc)
    if "truncated" in text.lower():
        return "truncated or corrupt image data"
    return text


def open_image(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode image bytes (first frame of animations); raises on empty or corrupt data.

    A picture of more than `MAX_PIXELS` is refused from the size its header declares, before
    anything is decoded. `draft_size` lets JPEG decoding downscale in the DCT, which makes huge
    photos cheap; the stored size stays in `image.info["original_size"]`.
    """
    if not data:
        raise ValueError("empty file (0 bytes)")
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise Image.DecompressionBombError(f"{width}x{height} pixels, more than {MAX_PIXELS}")
    image.info["original_size"] = image.size
    if draft_size is not None and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    image.load()
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode (grayscale, palette, RGBA, CMYK, 16-bit, float) to 8-bit RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGB", "L", "P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1", "LAB", "HSV"):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype.kind == "f":
        top = float(array.max()) or 1.0
        array = np.clip(array / top * 255.0, 0, 255)
    else:  # 8 or 16 bits; a 32-bit image's values outside 0-65535 are clipped, never wrapped
        bits = 16 if array.max(initial=0) > 255 or image.mode.startswith("I;16") else 8
        array = np.clip(array, 0, 2**bits - 1).astype(np.float64) / (2**bits - 1) * 255.0
    array = np.round(array).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3], mode="RGB")


def to_model_input(image: Image.Image | Path, size: int) -> np.ndarray:
    """The (size, size, 3) uint8 RGB array the model takes, exactly as training makes it.

    A path is read with `open_image`, JPEGs decoded straight at reduced scale; a PIL image that is
    not loaded yet (fresh from `Image.open`) is decoded the same way. Then any mode becomes 8-bit
    RGB (`to_rgb`, EXIF orientation applied) and is resized bilinearly. Raises if unreadable.
    """
    if isinstance(image, Image.Image):
        if image.format == "JPEG":
            image.draft("RGB", (size, size))  # no effect on an image that is already loaded
    else:
        image = open_image(Path(image).read_bytes(), draft_size=size)
    rgb = to_rgb(image)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_rgb(path: Path) -> np.ndarray:
    """One file at its native size as an RGB uint8 array (Augmentor's input); raises if unreadable."""
    return np.asarray(to_rgb(open_image(Path(path).read_bytes())), dtype=np.uint8)


def _try_load(path: Path, size: int) -> np.ndarray | Unreadable:
    try:
        return to_model_input(path, size)
    except DECODE_ERRORS as exc:
        return Unreadable(Path(path), describe_error(exc))


def decode_many(paths: Sequence[Path], size: int) -> tuple[np.ndarray, list[int], list[Unreadable]]:
    """Decode files in parallel: (images of the readable ones, their indices, the failures)."""
    images: list[np.ndarray] = []
    kept: list[int] = []
    failures: list[Unreadable] = []
    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        for index, result in enumerate(pool.map(lambda p: _try_load(p, size), paths)):
            if isinstance(result, Unreadable):
                failures.append(result)
            else:
                images.append(result)
                kept.append(index)
    array = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return array, kept, failures


def iter_image_files(inputs: Iterable[Path]) -> Iterable[Path]:
    """Files named directly, plus image files found recursively in folders (sorted).

    Links are kept even when broken or looping, so that they are reported as unreadable.
    """
    for item in inputs:
        if item.is_dir():
            yield from sorted(
                p for p in item.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink())
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
            )
        else:
            yield item
