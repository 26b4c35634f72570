"""Loaders for every input kind: a folder, a .zip, an .npz, or a built-in data set."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..preprocess import conform_images, stack_images
from ..progress import bar
from .files import FileEntry, decode_entry, file_entries, folder_files, folder_labels
from .imageset import ImageSet
from .pack import load_npy

BUILTINS = ("builtin:digits", "builtin:digits+simulated")


def load_images(
    source: str | Path,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    progress: bool = False,
) -> ImageSet:
    """Load images from a folder, a .zip, an .npz or a built-in set, as uint8 (N, H, W, C).

    Images are resized to image_size (square) when given, and converted to `channels`
    (1 or 3; None keeps gray as 1 and colour as 3). Files that cannot be decoded are
    listed in `ImageSet.skipped` with the reason.
    """
    name = str(source)
    if name.startswith("builtin:"):
        data = _load_builtin(name)
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(
                f"input not found: {path} (expected a folder, .zip, .npz or builtin:digits)"
            )
        if path.is_dir():
            data = _load_files(folder_files(path), path, image_size, channels, progress)
        elif path.suffix.lower() == ".zip":
            data = _load_zip(path, image_size, channels, progress)
        elif path.suffix.lower() == ".npz":
            data = _load_npz(path)
        elif path.suffix.lower() == ".npy":
            data = load_npy(path)  # memory-mapped: batches are read from disk as they are used
        else:
            raise ValueError(
                f"unknown input format {path.suffix or '(no extension)'!r} for {path}; "
                "expected a folder, a .zip, an .npz, a packed .npy or builtin:digits"
            )
    data = _conform(data, image_size, channels)
    if len(data) == 0:
        raise ValueError(f"no readable images in {source} ({_skip_summary(data.skipped)})")
    return data


def _skip_summary(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return "it holds no image files"
    return f"{len(skipped)} files skipped, first: {skipped[0][0]}: {skipped[0][1]}"


def _load_zip(path: Path, image_size, channels, progress) -> ImageSet:
    with file_entries(path) as entries:
        return _load_files(entries, path, image_size, channels, progress, total=len(entries))


def _load_files(
    entries: Iterable[FileEntry], root: Path, image_size, channels, progress, total=None
) -> ImageSet:
    arrays, paths, skipped = [], [], []
    shown = (lambda rel: str(root / rel)) if root.is_dir() else (lambda rel: rel)  # one path convention
    for rel, read in bar(entries, enabled=progress, total=total, desc="decoding", unit="file"):
        image = decode_entry(rel, read, image_size, channels)
        if isinstance(image, str):
            skipped.append((shown(rel), image))
        else:
            arrays.append(image)
            paths.append(rel)
    if not arrays:
        return ImageSet(np.zeros((0, 1, 1, 1), np.uint8), [], skipped=skipped, source=str(root))
    labels, label_names = folder_labels(paths)
    images = stack_images(arrays, channels)
    return ImageSet(images, [shown(p) for p in paths], labels, label_names, skipped=skipped, source=str(root))


# -- arrays: npz and built-in sets --------------------------------------------------------------


def _load_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{path} holds object arrays, which are refused (no pickle)") from None
        raise ValueError(f"{path} is not a readable .npz file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "images" not in arrays:
        raise ValueError(f"{path} has no 'images' array; found keys {sorted(arrays)}")
    images = _npz_images(arrays["images"], path)
    labels, names = _npz_labels(arrays, len(images), path)
    paths = [str(i) for i in range(len(images))]
    return ImageSet(images, paths, labels, names, source=str(path))


def _npz_images(images: np.ndarray, path: Path) -> np.ndarray:
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: 'images' must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or min(images.shape[1:3]) < 1:
        raise ValueError(
            f"{path}: 'images' must have shape (N, H, W) or (N, H, W, C) with C in 1, 3, 4, "
            f"got {images.shape}"
        )
    return images[..., :3] if images.shape[-1] == 4 else images


def _npz_labels(arrays: dict, n: int, path: Path) -> tuple[np.ndarray | None, list[str] | None]:
    if "labels" not in arrays:
        return None, None
    raw = arrays["labels"]
    if raw.ndim != 1 or len(raw) != n:
        raise ValueError(f"{path}: 'labels' must have shape ({n},), got {raw.shape}")
    if raw.dtype.kind in "iu" and "label_names" in arrays:
        if arrays["label_names"].ndim != 1:
            raise ValueError(f"{path}: 'label_names' must be 1-D, got shape {arrays['label_names'].shape}")
        names = [str(x) for x in arrays["label_names"]]
        if raw.min(initial=0) < 0 or raw.max(initial=0) >= len(names):
            raise ValueError(f"{path}: 'labels' must index 'label_names' (0..{len(names) - 1})")
        return raw.astype(np.int64), names
    values, index = np.unique(raw.astype(str), return_inverse=True)
    return index.astype(np.int64), [str(v) for v in values]


def _load_builtin(name: str) -> ImageSet:
    if name not in BUILTINS:
        raise ValueError(f"unknown built-in data set {name!r}; expected one of {', '.join(BUILTINS)}")
    if name == "builtin:digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        labels, domains = digits.target.astype(np.int64), None
    else:
        from .synthetic import DOMAIN_NAMES, digits_with_simulated

        images, labels, domains = digits_with_simulated(seed=0)
    paths = [f"{name}[{i}]" for i in range(len(images))]
    data = ImageSet(images, paths, labels, [str(d) for d in range(10)], source=name)
    if domains is not None:
        data.domains, data.domain_names = domains, list(DOMAIN_NAMES)
    return data


def _conform(data: ImageSet, image_size: int | None, channels: int | None) -> ImageSet:
    """Resize and convert arrays that did not come through the decoder."""
    if len(data):
        data.images = conform_images(data.images, image_size, channels)
    return data
