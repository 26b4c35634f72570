"""Packing: decode a folder or zip once into a uint8 .npy file that later runs memory-map.

Memory stays bounded by one image (plus the page cache) however many images there are, and
every later fit, encode or assign reads batches straight from the file.
A sidecar `NAME.json` keeps each image's path, the labels and the skipped files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..folders import check_output_file, created_by_aegmm
from ..progress import bar
from ..storage import write_json
from .files import decode_entry, file_entries, folder_labels
from .imageset import ImageSet

SIDECAR_KEYS = {"source", "paths", "skipped", "labels", "label_names"}


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def is_packed(path: Path) -> bool:
    """True when the .npy at ``path`` (or its sidecar) was written by ``aegmm pack``: its sidecar
    says so (or has exactly the keys an older aegmm wrote)."""
    if created_by_aegmm(sidecar(path)):
        return True
    try:
        return set(json.loads(sidecar(path).read_text())) == SIDECAR_KEYS
    except (OSError, ValueError, TypeError):
        return False


def pack_images(
    source: str | Path, out: str | Path, *, image_size: int, channels: int = 3, progress: bool = False
) -> dict:
    """Decode every image of a folder or .zip into `out` (.npy, uint8 N x S x S x C)."""
    source, out = Path(source), Path(out)
    if out.suffix != ".npy":
        raise ValueError(f"--out must end in .npy, got {out.name}")
    if not source.exists():
        raise FileNotFoundError(f"input not found: {source} (expected a folder or a .zip)")
    if not source.is_dir() and source.suffix.lower() != ".zip":
        raise ValueError(f"pack reads a folder or a .zip, got {source.name}")
    for path in (out, sidecar(out)):  # the sidecar, too, replaces only aegmm's own file
        check_output_file(path, inputs=[source], flag="--out", written_by_aegmm=is_packed)
    with file_entries(source) as entries:
        return _pack(entries, source, out, image_size, channels, progress)


def _pack(entries, source: Path, out: Path, image_size: int, channels: int, progress: bool) -> dict:
    tmp = out.with_name(f".{out.name}.partial")
    try:
        return _pack_into(tmp, entries, source, out, image_size, channels, progress)
    finally:
        tmp.unlink(missing_ok=True)  # also after an error or an interrupt


def _pack_into(tmp: Path, entries, source: Path, out: Path, image_size, channels, progress) -> dict:
    images = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.uint8, shape=(max(len(entries), 1), image_size, image_size, channels)
    )
    paths, skipped = [], []
    for rel, read in bar(entries, enabled=progress, desc="packing", unit="file"):
        image = decode_entry(rel, read, image_size, channels)
        if isinstance(image, str):
            skipped.append((rel, image))
        else:
            images[len(paths)] = image
            paths.append(rel)
    if not paths:
        raise ValueError(f"no readable images in {source} ({len(skipped)} files skipped)")
    _truncate(images, len(paths), out)
    labels, names = folder_labels(paths)
    meta = {
        "created_by": "aegmm",
        "source": str(source),
        "paths": paths,
        "skipped": skipped,
        "labels": None if labels is None else labels.tolist(),
        "label_names": names,
    }
    write_json(sidecar(out), meta)
    return {"images": len(paths), "skipped": len(skipped), "path": str(out)}


def _truncate(images: np.memmap, n: int, out: Path, chunk: int = 65536) -> None:
    """Copy the first n images into the final .npy (a smaller header), then rename."""
    final = out.with_name(f".{out.name}.tmp")
    target = np.lib.format.open_memmap(final, mode="w+", dtype=np.uint8, shape=(n, *images.shape[1:]))
    for start in range(0, n, chunk):
        target[start : start + chunk] = images[start : min(start + chunk, n)]
    target.flush()
    del target
    os.replace(final, out)


def load_npy(path: Path) -> ImageSet:
    """A packed .npy, memory-mapped (read lazily), with its sidecar's paths and labels if present."""
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path} is not a readable .npy array ({exc})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{path}: expected uint8 (N, H, W, C) with C in 1, 3, got {images.dtype} {images.shape}"
        )
    meta = json.loads(sidecar(path).read_text()) if sidecar(path).is_file() else {}
    paths = meta.get("paths") or [str(i) for i in range(len(images))]
    labels = meta.get("labels")
    return ImageSet(
        images,
        paths,
        None if labels is None else np.asarray(labels, dtype=np.int64),
        meta.get("label_names"),
        skipped=[tuple(s) for s in meta.get("skipped", [])],
        source=str(path),
    )
