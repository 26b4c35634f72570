"""The files of a folder or a .zip as (relative path, reader) entries, and decoding one entry."""

from __future__ import annotations

import contextlib
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from .decode import DecodeError, decode_image, is_image_name

# larger files are skipped unread: an image within decode.MAX_PIXELS needs far fewer bytes
MAX_FILE_BYTES = 512 * 2**20

FileEntry = tuple[str, Callable[[], bytes]]  # (relative posix path, reader)


def folder_files(root: Path) -> Iterator[FileEntry]:
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
        yield list(folder_files(path))
        return
    if path.suffix.lower() != ".zip":
        raise ValueError(f"expected a folder or a .zip, got {path.name}")
    with open_zip(path) as archive:
        members = sorted((m for m in archive.infolist() if not m.is_dir()), key=lambda m: m.filename)
        yield [(m.filename, _zip_reader(archive, m)) for m in members]


def _zip_reader(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        _check_file_size(member.file_size)  # zipfile never returns more than the declared size
        return archive.read(member)  # read into memory only: nothing is extracted to disk

    return read


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
