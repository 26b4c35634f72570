"""Figures as image files: PNG, JPEG or WebP chosen by extension, each marked as aegmm's own, so
that aegmm replaces an existing image file only when it wrote it."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from aegmm.evaluation.plots import MARK, to_png

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # image files aegmm writes


def image_format(path: Path | str, flag: str) -> str:
    """Pillow's format name for a file name's extension, or a one-line error naming the flag."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{flag} must end in .png, .jpg, .jpeg or .webp, got {Path(path).name!r}")
    return FORMATS[suffix]


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The Figure encoded as PNG, JPEG or WEBP (Pillow's names), marked as written by aegmm."""
    png = to_png(fig)
    if fmt == "PNG":
        return png
    from PIL import Image

    buffer = io.BytesIO()
    marks = {"JPEG": {"comment": MARK.encode()}, "WEBP": {"xmp": MARK.encode()}}[fmt]
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, fmt, quality=90, **marks)
    return buffer.getvalue()


def is_aegmm_image(path: Path) -> bool:
    """True when the image file at ``path`` carries aegmm's mark (files over 16 MiB never do)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16 << 20)
    except OSError:
        return False
    return MARK.encode() in head
