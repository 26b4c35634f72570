"""Reading a large input in chunks, so that assigning millions of images uses bounded memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..preprocess import conform_images, stack_images
from .files import decode_entry, file_entries
from .imageset import ImageSet
from .loaders import load_images


def iter_chunks(
    source: str | Path,
    *,
    image_size: int,
    channels: int,
    chunk: int = 20_000,
    on_total: Callable[[int], None] | None = None,
) -> Iterator[ImageSet]:
    """ImageSets of at most `chunk` decoded images (skipped files ride along with their chunk).

    ``on_total(n)`` is told, before the first chunk, how many entries (images or files) there are.
    """
    on_total = on_total or (lambda n: None)
    path = Path(str(source))
    if str(source).startswith("builtin:") or path.suffix.lower() in (".npz", ".npy"):
        data = load_images(source, channels=channels)  # .npy stays memory-mapped
        on_total(len(data) + len(data.skipped))
        for start in range(0, len(data), chunk):
            part = data.subset(np.arange(start, min(start + chunk, len(data))))
            part.images = conform_images(part.images, image_size, channels)
            part.skipped = data.skipped if start == 0 else []
            yield part
        return
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path} (expected a folder, .zip, .npz or .npy)")
    if path.suffix.lower() not in (".zip", "") and not path.is_dir():
        raise ValueError(
            f"unknown input format {path.suffix!r} for {path}; expected a folder, .zip, .npz or .npy"
        )
    with file_entries(path) as entries:
        on_total(len(entries))
        for start in range(0, max(len(entries), 1), chunk):
            yield _decode_chunk(entries[start : start + chunk], path, image_size, channels)


def _decode_chunk(entries, root: Path, image_size: int, channels: int) -> ImageSet:
    arrays, paths, skipped = [], [], []
    for rel, read in entries:
        image = decode_entry(rel, read, image_size, channels)
        shown = str(root / rel) if root.is_dir() else rel  # one convention for every row
        if isinstance(image, str):
            skipped.append((shown, image))
        else:
            arrays.append(image)
            paths.append(shown)
    images = (
        stack_images(arrays, channels)
        if arrays
        else np.zeros((0, image_size, image_size, channels), np.uint8)
    )
    return ImageSet(images, paths, skipped=skipped, source=str(root))
