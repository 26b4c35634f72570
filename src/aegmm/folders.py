"""Output folders and files: what aegmm may create, fill and replace, and what it must never touch.

The rules, for every verb:

- A folder aegmm creates (or finds empty and fills) gets a marker file, ``.aegmm-output``.
- ``--force`` replaces only a folder that carries that marker, or an empty one: never a folder
  aegmm did not write.
- An output never overlaps the inputs: it is not an input, does not lie inside one and does not
  contain one (the data being read, or the run folder being used), forced or not.
- A single output file (the CSV of ``assign``, its gallery, the ``.npy`` of ``pack``) replaces an
  existing file only when aegmm wrote that file.

Every refusal is one line naming the flag and the conflict. This module is the only place that
deletes anything the user can name.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from .storage import write_json

MARKER = ".aegmm-output"  # in every folder aegmm created: the licence for --force to replace it


def input_paths(*sources: object) -> list[Path]:
    """The existing filesystem paths among ``sources`` (``builtin:`` names and arrays are none)."""
    paths = []
    for source in sources:
        if (
            isinstance(source, str | Path)
            and not str(source).startswith("builtin:")
            and Path(source).exists()
        ):
            paths.append(Path(source))
    return paths


def check_no_overlap(out: Path, inputs: Iterable[Path], flag: str = "--out") -> None:
    """Refuse an output that is an input, lies inside one, or contains one."""
    target = Path(out).resolve()
    for source in inputs:
        src = Path(source).resolve()
        if target == src:
            conflict = "is the input itself"
        elif target.is_relative_to(src):
            conflict = "lies inside the input"
        elif src.is_relative_to(target):
            conflict = "contains the input"
        else:
            continue
        raise ValueError(f"{flag} {out} {conflict} {source}; choose a path outside the data and the run")


def created_by_aegmm(json_path: Path) -> bool:
    """True when the JSON file at ``json_path`` (a marker or a sidecar) says aegmm wrote it."""
    try:
        return json.loads(Path(json_path).read_text()).get("created_by") == "aegmm"
    except (OSError, ValueError, AttributeError):
        return False


def is_marked(folder: Path) -> bool:
    """True when ``folder`` holds the marker of a folder aegmm created."""
    return created_by_aegmm(Path(folder) / MARKER)


def check_output(
    out: Path,
    *,
    inputs: Iterable[Path] = (),
    resume: bool = False,
    force: bool = False,
    resumable: bool = False,
    flag: str = "--out",
    hint: str | None = None,
) -> None:
    """Refuse what ``prepare_output`` would refuse, before any work is done; writes nothing.

    ``flag`` names the option in messages; ``hint`` replaces the advice for a non-empty folder.
    """
    out = Path(out)
    check_no_overlap(out, inputs, flag)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{flag} must be a folder, but {out} is a file")
    if not out.is_dir() or not any(out.iterdir()) or resume:
        return
    if not force:
        hint = hint or (
            "use --resume to continue it or --force to replace it"
            if resumable
            else "use --force to replace it"
        )
        raise FileExistsError(f"{flag} {out} already exists and is not empty; {hint}")
    if not is_marked(out):
        raise FileExistsError(
            f"--force replaces only folders aegmm created, but {out} has no {MARKER} marker; "
            "remove it yourself or choose another --out"
        )


def prepare_output(
    out: Path,
    *,
    inputs: Iterable[Path] = (),
    resume: bool = False,
    force: bool = False,
    resumable: bool = False,
) -> bool:
    """Check ``out``, then create it (replacing a marked folder when forced); True if (re)created.

    The folder is left holding the marker, so that a later ``--force`` may replace it.
    """
    out = Path(out)
    check_output(out, inputs=inputs, resume=resume, force=force, resumable=resumable)
    created = not out.exists()
    if force and not resume and out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)  # check_output verified the marker and that no input lies within
        created = True
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).exists():
        from . import __version__

        write_json(out / MARKER, {"created_by": "aegmm", "version": __version__})
    return created


def remove_if_unused(out: Path) -> None:
    """Remove a folder ``prepare_output`` created that holds nothing but its marker."""
    if out.is_dir() and {p.name for p in out.iterdir()} <= {MARKER}:
        (out / MARKER).unlink(missing_ok=True)
        out.rmdir()


def check_output_file(path: Path, *, inputs: Iterable[Path] = (), flag: str, written_by_aegmm) -> None:
    """A single output file: outside the inputs, not a folder, and replacing only aegmm's own file.

    ``written_by_aegmm(path) -> bool`` tells whether an existing file is one aegmm wrote.
    """
    path = Path(path)
    check_no_overlap(path, inputs, flag)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} must be the path of a file, but {path} is a folder")
    if path.exists() and not written_by_aegmm(path):
        raise FileExistsError(
            f"{flag} {path} already exists and was not written by aegmm; remove it yourself or choose "
            "another path"
        )
