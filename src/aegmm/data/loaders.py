"""Loaders for every input kind: a folder, a .zip, an .npz, or a built-in data set."""

from __future__ import annotations

import contextlib
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from ..progress import bar
from .decode import DecodeError, decode_image, is_image_name, match_channels
from .imageset import ImageSet

BUILTINS = ("builtin:digits", "builtin:digits+simulated")
# larger files are skipped unread: an image within decode.MAX_PIXELS needs far fewer bytes
MAX_FILE_BYTES = 512 * 2**20


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
            data = _load_files(_folder_files(path), path, image_size, channels, progress)
        elif path.suffix.lower() == ".zip":
            data = _load_zip(path, image_size, channels, progress)
        elif path.suffix.lower() == ".npz":
            data = _load_npz(path)
        elif path.suffix.lower() == ".npy":
            from .pack import load_npy

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


# -- files: folders and zips -------------------------------------------------------------------

FileEntry = tuple[str, Callable[[], bytes]]  # (relative posix path, reader)


def _folder_files(root: Path) -> Iterator[FileEntry]:
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        yield path.relative_to(root).as_posix(), _file_reader(path)


def _file_reader(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        info = path.stat()  # follows symlinks: a link to a device or a pipe is not read
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError("not a regular file")
        _check_file_size(info.st_size)
        return path.read_bytes()

    return read


def _check_file_size(size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise DecodeError(f"file of {size:,} bytes exceeds the limit of {MAX_FILE_BYTES:,} bytes")


def open_zip(path: Path) -> zipfile.ZipFile:
    """The archive, or a ValueError naming the file when it is not a readable zip."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is not a readable zip archive ({exc})") from None


@contextlib.contextmanager
def file_entries(path: Path) -> Iterator[list[FileEntry]]:
    """(relative path, reader) of every file in a folder or a zip, sorted; the zip stays open."""
    if path.is_dir():
        yield list(_folder_files(path))
        return
    if path.suffix.lower() != ".zip":
        raise ValueError(f"expected a folder or a .zip, got {path.name}")
    with open_zip(path) as archive:
        members = sorted((m for m in archive.infolist() if not m.is_dir()), key=lambda m: m.filename)
        yield [(m.filename, _zip_reader(archive, m)) for m in members]


def _load_zip(path: Path, image_size, channels, progress) -> ImageSet:
    with file_entries(path) as entries:
        return _load_files(entries, path, image_size, channels, progress, total=len(entries))


def _zip_reader(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        _check_file_size(member.file_size)  # zipfile never returns more than the declared size
        return archive.read(member)  # read into memory only: nothing is extracted to disk

    return read


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
    images = _stack(arrays, channels)
    return ImageSet(images, [shown(p) for p in paths], labels, label_names, skipped=skipped, source=str(root))


def decode_entry(rel: str, read: Callable[[], bytes], image_size, channels) -> np.ndarray | str:
    """One file's decoded image, or the reason it was skipped."""
    if not is_image_name(rel):
        return "not an image file name (extension)"
    try:
        return decode_image(read(), image_size, channels)
    except DecodeError as exc:
        return str(exc)
    except OSError as exc:
        return f"could not read file ({exc.strerror or exc})"
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        return f"could not read the zip member ({exc})"  # corrupt, encrypted or unsupported


def folder_labels(paths: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """First-level subfolder names, after dropping folders that every image shares."""
    parts = [PurePosixPath(p).parts for p in paths]
    while all(len(p) > 2 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    if not all(len(p) >= 2 for p in parts):
        return None, None
    names = sorted({p[0] for p in parts})
    if len(names) < 2:
        return None, None
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup[p[0]] for p in parts], dtype=np.int64), names


def _stack(arrays: list[np.ndarray], channels: int | None) -> np.ndarray:
    if channels is None:
        channels = 3 if any(a.shape[-1] == 3 for a in arrays) else 1
    arrays = [match_channels(a, channels) for a in arrays]
    shapes = Counter(a.shape for a in arrays)
    if len(shapes) > 1:
        (height, width, _), _ = shapes.most_common(1)[0]
        arrays = [a if a.shape[:2] == (height, width) else _resize(a, height, width) for a in arrays]
    return np.stack(arrays)


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
    out = np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


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


def conform_images(images: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> (N, image_size, image_size, channels); None keeps that property."""
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0-255), got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"images must have shape (N, H, W) or (N, H, W, C) with C in 1, 3, 4, got {images.shape}"
        )
    if images.shape[-1] == 4:
        images = images[..., :3]
    if channels is not None and images.shape[-1] != channels:
        images = np.stack([match_channels(a, channels) for a in images])
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
        images = np.stack([_resize(a, image_size, image_size) for a in images])
    return images
