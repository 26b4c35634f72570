"""Decoding one image file into a uint8 array of a fixed size and channel count.

Untrusted bytes only ever reach Pillow's decoders for the formats of IMAGE_EXTENSIONS, and
memory stays bounded whatever a file's header claims:

- an image declaring more than MAX_PIXELS pixels is refused before its pixels are decoded;
- a JPEG is first shrunk by its own decoder (draft mode, up to 8x per side) when it has more
  than LARGE_PIXELS pixels, so photos of up to Pillow's hard limit (2 x 89.5 million pixels,
  e.g. 108-megapixel phone photos) are read at 1/64 of their pixels;
- an image of more than LARGE_PIXELS pixels is resized to `image_size` in its own mode before
  any conversion (16-bit to 8-bit, CMYK, palette), so conversions touch only the small result.

Decoding one image therefore holds the file's bytes (at most files.MAX_FILE_BYTES) plus
about 4 bytes per pixel of MAX_PIXELS (256 MiB) at once (WebP: 4 copies, so a quarter of the
pixels), and far less for JPEGs. tests/test_reliability.py decodes PNGs whose headers claim
40000x40000 and 9000x9000 pixels (refused before decoding), a 90-megapixel and a 16-megapixel
JPEG (draft mode) and a 25-megapixel 16-bit PNG (resized before conversion), each in a fresh
process, and asserts a bound on the peak memory of each.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..preprocess import match_channels, resize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# the Pillow decoders that may run on a file: those of IMAGE_EXTENSIONS, whatever the file's name
FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF")

MAX_PIXELS = 64_000_000  # larger images are refused before decoding (JPEGs: after draft; WebP: 1/4)
LARGE_PIXELS = 2048 * 2048  # larger images are shrunk first: JPEGs while decoding, others before converting

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_JPEG_MAGIC = b"\xff\xd8\xff"


class DecodeError(ValueError):
    """A file that could not be turned into an image; the message is the reason it was skipped."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def decode_image(data: bytes, image_size: int | None, channels: int | None) -> np.ndarray:
    """Decode image bytes into uint8 (H, W, C); resized to image_size when given.

    channels=None keeps grayscale images as 1 channel and everything else as 3. Raises
    DecodeError, with the reason, for anything that is not a decodable image.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on odd but readable files (EXIF, ICC, ...)
        # JPEGs between Pillow's two limits are shrunk in draft mode; other formats are refused
        bomb = "ignore" if bytes(data[:3]) == _JPEG_MAGIC else "error"
        warnings.simplefilter(bomb, Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                return _to_array(img, image_size, channels)
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecodeError(f"image too large to decode safely ({exc})") from None
        except UnidentifiedImageError:
            raise DecodeError(
                "not a readable image (unknown or corrupt format; accepted: JPEG, PNG, BMP, GIF, WebP, TIFF)"
            ) from None
        except MemoryError:
            raise DecodeError("not enough memory to decode this image") from None
        except Exception as exc:  # any decoder failure on untrusted bytes means a corrupt file
            raise DecodeError(f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def _to_array(img: Image.Image, image_size: int | None, channels: int | None) -> np.ndarray:
    width, height = img.size
    if width * height > LARGE_PIXELS:
        target = 2 * image_size if image_size else 4096
        img.draft(None, (target, target))  # JPEG: decoded at 1/2, 1/4 or 1/8 scale; others: no-op
    limit = MAX_PIXELS // 4 if img.format == "WEBP" else MAX_PIXELS  # Pillow holds 4 copies of a WebP
    if img.size[0] * img.size[1] > limit:
        raise DecodeError(
            f"image of {width}x{height} pixels exceeds the limit of {limit:,} pixels for {img.format}"
        )
    img.load()
    if image_size is not None and img.size[0] * img.size[1] > LARGE_PIXELS:
        img = _shrink(img, image_size)  # in the image's own mode: conversions below stay small
    gray = img.mode in _GRAY_MODES or (img.mode == "P" and _palette_is_gray(img))
    img = _to_gray(img) if gray else img.convert("RGB")
    if image_size is not None and img.size != (image_size, image_size):
        img = resize(img, image_size, image_size)
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return match_channels(array, channels)


def _shrink(img: Image.Image, size: int) -> Image.Image:
    """Resize a large image to size x size in its own mode, without a full-size copy."""
    if img.mode in ("1", "P") or img.mode.startswith("I;16"):  # modes that reduce() refuses
        return img.resize((size, size), Image.Resampling.BILINEAR)  # no reducing_gap: it calls reduce()
    factors = (max(1, img.size[0] // (2 * size)), max(1, img.size[1] // (2 * size)))
    return resize(img.reduce(factors), size, size)  # box, then bilinear


def _palette_is_gray(img: Image.Image) -> bool:
    rgb = np.asarray(img.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _to_gray(img: Image.Image) -> Image.Image:
    """8-bit grayscale; 16- and 32-bit images are rescaled, not clipped."""
    if img.mode in ("1", "L", "LA", "P"):
        return img.convert("L")
    values = np.asarray(img, dtype=np.float32)  # float32 in place: 4 bytes per pixel, not 24
    top = 65535.0 if values.max(initial=0) > 255 else 255.0
    if img.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        top = max(float(values.max(initial=0)), 1.0)
    values *= 255.0 / top
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return Image.fromarray(values.astype(np.uint8), mode="L")
