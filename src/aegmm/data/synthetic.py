"""Simulated handwritten digits: DejaVu Sans glyphs rendered with random jitter.

`digits_with_simulated` pairs scikit-learn's real 8x8 digits with rendered ones, so a
"real vs simulated" analysis runs without any download. The rendering imitates how the
UCI digits were made (a size-normalised, centred 32x32 bitmap, counted in 4x4 blocks
to 0..16), but from a font rather than a pen, so the two domains stay distinguishable.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from matplotlib.font_manager import FontProperties, findfont
from PIL import Image, ImageDraw, ImageFont

DOMAIN_NAMES = ["real", "simulated"]

_CANVAS = 64  # side of the high-resolution canvas each digit is drawn on
_FONT_SIZE = 48  # points at which the glyph is drawn before being size-normalised
_LEVELS = 16  # the UCI digits count ink in 4x4 blocks: 0..16


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    path = findfont(FontProperties(family="DejaVu Sans"), fallback_to_default=False)
    return ImageFont.truetype(path, _FONT_SIZE)


def _bare_one(glyph: Image.Image, flag: float) -> Image.Image:
    """A "1" as people write it: no foot, and only `flag` (0..1) of the font's flag kept."""
    pixels = np.asarray(glyph).copy()
    ink = pixels > 127
    rows = np.flatnonzero(ink.any(axis=1))
    middle = rows[len(rows) // 3 : 2 * len(rows) // 3]
    widths = ink.sum(axis=1)
    lower = rows[rows > rows[0] + 0.7 * (rows[-1] - rows[0])]
    foot = lower[widths[lower] > 1.5 * np.median(widths[middle])]
    if len(foot):
        pixels[foot[0] :] = 0
        ink[foot[0] :] = False
    left = np.flatnonzero(ink.any(axis=0))[0]
    stem_left = np.flatnonzero(ink[middle].any(axis=0))[0]
    pixels[:, : stem_left - round(flag * (stem_left - left))] = 0
    return Image.fromarray(pixels)


def _draw_glyph(digit: int, stroke: int, angle: float, shear: float, flag: float) -> Image.Image:
    """The digit in white on black, thickened, sheared and rotated, cropped to its ink."""
    side = 2 * _FONT_SIZE
    glyph = Image.new("L", (side, side), 0)
    ImageDraw.Draw(glyph).text(
        (side / 2, side / 2),
        str(digit),
        fill=255,
        font=_font(),
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    if digit == 1:
        glyph = _bare_one(glyph, flag)
    # Slant like handwriting: x' = x + shear * (y - centre)
    glyph = glyph.transform(
        glyph.size,
        Image.Transform.AFFINE,
        (1, shear, -shear * side / 2, 0, 1, 0),
        resample=Image.Resampling.BILINEAR,
    )
    glyph = glyph.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return glyph.crop(glyph.getbbox())


def _render_one(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One digit on the (_CANVAS, _CANVAS) canvas as float ink in [0, 1]."""
    glyph = _draw_glyph(
        digit,
        stroke=int(rng.integers(1, 4)),
        angle=float(rng.uniform(-15.0, 15.0)),
        shear=float(rng.uniform(-0.05, 0.2)),
        flag=float(rng.uniform(0.0, 0.5)),
    )
    # Size-normalise: the height fills most of the frame, the width follows the aspect.
    width, height = glyph.size
    scale = rng.uniform(0.94, 1.0) * _CANVAS / height
    new_w = max(1, min(_CANVAS, round(width * scale * rng.uniform(0.7, 1.0))))
    new_h = max(1, min(_CANVAS, round(height * scale)))
    glyph = glyph.resize((new_w, new_h), resample=Image.Resampling.BILINEAR)

    shift_x, shift_y = rng.integers(-4, 5), rng.integers(-1, 2)
    left = int(np.clip((_CANVAS - new_w) // 2 + shift_x, 0, _CANVAS - new_w))
    top = int(np.clip((_CANVAS - new_h) // 2 + shift_y, 0, _CANVAS - new_h))
    canvas = np.zeros((_CANVAS, _CANVAS), dtype=np.float32)
    canvas[top : top + new_h, left : left + new_w] = np.asarray(glyph, dtype=np.float32) / 255
    canvas += rng.normal(0.0, 0.2, size=canvas.shape).astype(np.float32)  # scanner noise
    return np.clip(canvas, 0.0, 1.0)


def _area_downsample(canvas: np.ndarray, size: int) -> np.ndarray:
    """Average `canvas` over blocks down to (size, size), values stay in [0, 1]."""
    if _CANVAS % size == 0:
        block = _CANVAS // size
        return canvas.reshape(size, block, size, block).mean(axis=(1, 3))
    image = Image.fromarray(canvas.astype(np.float32))  # mode "F"
    return np.asarray(image.resize((size, size), resample=Image.Resampling.BOX))


def _to_pixels(canvas: np.ndarray, size: int) -> np.ndarray:
    """Pixel values 0..255 at (size, size); at 8x8 the UCI way, else plain area averaging.

    The UCI digits are 32x32 binary bitmaps whose 4x4 blocks are counted (0..16), which
    scikit-learn's digits hold and the npz files scale by 255 / 16.
    """
    if size != 8:
        return np.rint(_area_downsample(canvas, size) * 255)
    bitmap = _area_downsample(canvas, 32) > 0.5  # (32, 32)
    counts = bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3))  # (8, 8), 0.._LEVELS
    return np.rint(counts * 255 / _LEVELS)


def render_digits(
    n_per_digit: int = 180, image_size: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Render digits 0-9 from the DejaVu Sans font with random per-image variation.

    Returns (images, labels): uint8 (10 * n_per_digit, image_size, image_size, 1), ink
    bright on a dark background, and int64 digits 0-9, ordered by digit. Each image varies
    in size, shift, rotation (+-15 degrees), slant, stroke width and Gaussian noise, drawn
    at 64x64. At image_size 8 it becomes a 32x32 bitmap counted in 4x4 blocks (17 levels,
    scaled by 255 / 16) like scikit-learn's digits; other sizes are area-averaged.
    """
    if n_per_digit < 1:
        raise ValueError(f"n_per_digit must be >= 1, got {n_per_digit}")
    if not 1 <= image_size <= _CANVAS:
        raise ValueError(f"image_size must be between 1 and {_CANVAS}, got {image_size}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.int64), n_per_digit)
    pixels = [_to_pixels(_render_one(int(d), rng), image_size) for d in labels]
    images = np.stack(pixels).astype(np.uint8)[..., None]  # (N, size, size, 1)
    return images, labels


def digits_with_simulated(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real digits followed by 1,800 rendered ones.

    Returns (images, digits, domains): uint8 (N, 8, 8, 1), int64 digit labels 0-9, and
    int64 domains indexing DOMAIN_NAMES (0 = real, 1 = simulated), real images first.
    """
    from sklearn.datasets import load_digits

    real = load_digits()
    real_images = np.rint(real.images * 255 / _LEVELS).astype(np.uint8)[..., None]
    real_labels = real.target.astype(np.int64)
    sim_images, sim_labels = render_digits(n_per_digit=180, image_size=8, seed=seed)
    images = np.concatenate([real_images, sim_images])
    digits = np.concatenate([real_labels, sim_labels])
    domains = np.repeat(np.array([0, 1], dtype=np.int64), [len(real_images), len(sim_images)])
    return images, digits, domains
