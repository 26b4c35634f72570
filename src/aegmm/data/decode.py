"""Decoding one image file into a uint8 array of a fixed size and channel count."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Images with more pixels than this are refused before their pixels are decoded, which bounds
# memory to about MAX_PIXELS * 4 bytes (~256 MiB) per image. JPEGs are first reduced by the
# decoder's own draft mode, so a large photo is still read at a fraction of that cost.
MAX_PIXELS = 64_000_000

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class DecodeError(ValueError):
    """A file that could not be turned into an image; the message is the reason it was skipped."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def decode_image(data: bytes, image_size: int | None, channels: int | None) -> np.ndarray:
    """Decode image bytes into uint8 (H, W, C); resized to image_size when given.

    channels=None keeps grayscale images as 1 channel and everything else as 3.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                return _to_array(img, image_size, channels)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecodeError(f"image too large to decode safely ({exc})") from None
        except UnidentifiedImageError:
            raise DecodeError("not a readable image (unknown or corrupt format)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DecodeError(f"corrupt or truncated image ({exc})") from None


def _to_array(img: Image.Image, image_size: int | None, channels: int | None) -> np.ndarray:
    width, height = img.size
    if width * height > MAX_PIXELS:
        if img.format == "JPEG":
            img.draft("RGB", (4096, 4096))  # the JPEG decoder downscales by up to 8x for free
        if img.size[0] * img.size[1] > MAX_PIXELS:
            raise DecodeError(f"image of {width}x{height} pixels exceeds the limit of {MAX_PIXELS:,} pixels")
    img.load()
    gray = img.mode in _GRAY_MODES or (img.mode == "P" and _palette_is_gray(img))
    img = _to_gray(img) if gray else img.convert("RGB")
    if image_size is not None and img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return match_channels(array, channels)


def _palette_is_gray(img: Image.Image) -> bool:
    rgb = np.asarray(img.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _to_gray(img: Image.Image) -> Image.Image:
    """8-bit grayscale; 16- and 32-bit images are rescaled, not clipped."""
    if img.mode in ("1", "L", "LA", "P"):
        return img.convert("L")
    values = np.asarray(img, dtype=np.float64)
    top = 65535.0 if values.max(initial=0) > 255 else 255.0
    if img.mode == "F":
        top = max(float(values.max(initial=0)), 1.0)
    scaled = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def match_channels(array: np.ndarray, channels: int | None) -> np.ndarray:
    """Convert uint8 (H, W, C) between 1 and 3 channels (luma for RGB -> gray)."""
    have = array.shape[-1]
    if channels is None or have == channels:
        return array
    if channels == 3 and have == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 1 and have == 3:
        luma = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, :, None]
    raise ValueError(f"cannot convert {have} channels to {channels}")
