"""Run folders: ``fit_run`` fits into one, ``assign_run`` assigns new images with one; their CSV files."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import distributed
from .data import ImageSet, load_images
from .exports import AssignExtras, AssignOutputs
from .folders import check_output, check_output_file, input_paths, prepare_output, remove_if_unused
from .pipeline import Assignments, ImageClusterer, load
from .progress import bar, say
from .storage import write_atomic

CHECKPOINTS = "checkpoint"
ASSIGNMENTS = "assignments.csv"
SKIPPED = "skipped.csv"
ASSIGNMENT_COLUMNS = ["path", "cluster", "probability", "log_likelihood", "skipped"]


def check_cluster_count(clusterer: ImageClusterer, n_images: int) -> None:
    """K (or the smallest K tried) must not exceed the number of images: checked before training."""
    k = clusterer.n_components
    if k == "auto" and clusterer.k_range[0] > n_images:
        raise ValueError(
            f"n_components='auto' tries K >= {clusterer.k_range[0]}, but there are {n_images} images"
        )
    if k != "auto" and k > n_images:
        raise ValueError(f"n_components must be <= the number of images ({n_images}), got {k}")


def fit_run(
    data: str | Path | ImageSet,
    out: str | Path,
    clusterer: ImageClusterer | None = None,
    *,
    resume: bool = False,
    force: bool = False,
) -> tuple[ImageClusterer, Assignments | None]:
    """Fit ``clusterer`` (default settings if None) on ``data`` and write the run folder ``out``.

    ``data`` is a folder, .zip, .npz, packed .npy, ``builtin:`` name or an ImageSet. Every setting
    and ``out`` are checked before any image is read: ``out`` must be empty or missing unless
    ``resume`` or ``force`` (which replaces only a folder aegmm wrote), and must not overlap the
    images' source. The folder gets the model files, assignments.csv of the training images (from
    the encoding that fitted the mixture) and skipped.csv. If the fit fails, a folder created
    here that is still empty is removed again; one holding checkpoints is kept for ``resume``.
    Under torchrun every process trains; rank 0 alone writes (the others return no table).
    """
    clusterer = ImageClusterer() if clusterer is None else clusterer
    clusterer.check_params()  # every setting, before touching the output folder
    out, main = Path(out), distributed.is_main()
    inputs = input_paths(data.source if isinstance(data, ImageSet) else data)
    if main:
        check_output(out, inputs=inputs, resume=resume, force=force, resumable=True)
    if not isinstance(data, ImageSet):
        data = load_images(data, image_size=clusterer.image_size, progress=clusterer.progress and main)
        say(f"loaded {len(data):,} images from {data.source}", enabled=clusterer.progress and main)
    check_cluster_count(clusterer, len(data))
    if main and data.skipped:
        print(skipped_summary(data.skipped, listed_in=out / SKIPPED), file=sys.stderr)
    created = main and prepare_output(out, inputs=inputs, resume=resume, force=force, resumable=True)
    try:
        return _fit_and_write(data, out, clusterer, resume=resume)
    except BaseException:
        if created:
            remove_if_unused(out)
        raise


def _fit_and_write(data: ImageSet, out: Path, clusterer: ImageClusterer, *, resume: bool):
    clusterer.fit(data, checkpoint_dir=out / CHECKPOINTS, resume=resume)
    if not distributed.is_main():
        return clusterer, None
    clusterer.save(out)
    assignments = clusterer.training_assignments_  # from the encoding that fitted the mixture
    write_assignments(out / ASSIGNMENTS, assignments)
    write_skipped(out / SKIPPED, data.skipped)
    return clusterer, assignments


@dataclass(frozen=True)
class Assigned:
    """What ``assign_run`` did: images per cluster, skipped files, and a line per extra output."""

    clusterer: ImageClusterer
    counts: np.ndarray
    skipped: list[tuple[str, str]]
    lines: list[str]


def assign_run(
    run: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    extras: AssignExtras | None = None,
    device: str = "auto",
    batch_size: int = 128,
    progress: bool = True,
) -> Assigned:
    """Assign the images of ``data`` with the fitted run in ``run``: the CSV ``out`` (path, cluster,
    probability, log-likelihood, skipped), plus the gallery, export and latents ``extras`` asks
    for. Every output is checked before the run is loaded; memory stays bounded by one chunk."""
    outputs = AssignOutputs.check(Path(run), data, Path(out), extras or AssignExtras())
    clusterer = load(run, progress=progress).set_params(device=device, encode_batch_size=batch_size)
    outputs.start(clusterer)
    counts, skipped = assign_to_csv(clusterer, data, Path(out), inputs=outputs.inputs, sink=outputs)
    return Assigned(clusterer, counts, skipped, outputs.finish(counts))


def write_assignments(path: Path, table: Assignments) -> None:
    """CSV: path,cluster,probability,log_likelihood,skipped; skipped files get an empty cluster."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(ASSIGNMENT_COLUMNS)
    _write_rows(writer, table)
    write_atomic(Path(path), buffer.getvalue().encode())


def _write_rows(writer, table: Assignments) -> None:
    for p, c, prob, ll in zip(table.paths, table.cluster, table.probability, table.log_likelihood):
        writer.writerow([p, int(c), f"{prob:.6f}", f"{ll:.6f}", ""])
    for p, reason in table.skipped:
        writer.writerow([p, "", "", "", reason])


def is_assignment_csv(path: Path) -> bool:
    """True when ``path`` starts with the header line of an assignments CSV aegmm wrote."""
    try:
        with open(path, newline="") as handle:
            return handle.readline().strip() == ",".join(ASSIGNMENT_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def assign_to_csv(
    clusterer: ImageClusterer,
    source: str | Path,
    path: Path,
    *,
    chunk: int = 4096,
    inputs: Sequence[Path] = (),
    sink=None,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Assign images chunk by chunk, streaming rows to a CSV that is renamed into place at the end.

    Memory stays bounded by one chunk; a bar counts the images on a terminal. ``sink.add(part,
    table)`` sees every chunk (gallery, export, latents). Returns the number of images per
    cluster and every skipped file with its reason. The CSV must lie outside ``inputs`` and the
    images' source, and replaces only an assignments CSV.
    """
    inputs = [*inputs, *input_paths(source)]
    check_output_file(Path(path), inputs=inputs, flag="--out", written_by_aegmm=is_assignment_csv)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.partial")
    progress = bar(enabled=clusterer.progress, desc="assigning", unit="image")
    try:
        with progress, open(tmp, "w", newline="") as handle:
            counts, skipped = _stream_rows(clusterer, source, csv.writer(handle), chunk, sink, progress)
        if not counts.sum():
            raise ValueError(f"no readable images in {source} ({len(skipped)} files skipped)")
        os.replace(tmp, path)
    except BaseException:  # an error or an interrupt: no partial CSV is left behind
        tmp.unlink(missing_ok=True)
        raise
    return counts, skipped


def _stream_rows(clusterer: ImageClusterer, source, writer, chunk: int, sink, progress):
    """Assign chunk by chunk, writing each chunk's rows: (images per cluster, skipped files)."""
    from .data.chunks import iter_chunks

    model = clusterer.config_.model
    counts = np.zeros(clusterer.n_components_, dtype=np.int64)
    skipped: list[tuple[str, str]] = []
    writer.writerow(ASSIGNMENT_COLUMNS)
    chunks = iter_chunks(
        source, image_size=model.image_size, channels=model.channels, chunk=chunk, on_total=progress.reset
    )
    for part in chunks:
        table = clusterer.assign(part) if len(part) else _empty_table(part)
        _write_rows(writer, table)
        counts += np.bincount(table.cluster, minlength=len(counts))
        skipped += part.skipped
        if sink is not None:
            sink.add(part, table)
        progress.update(len(part) + len(part.skipped))
    return counts, skipped


def _empty_table(part: ImageSet) -> Assignments:
    empty = np.zeros(0)
    return Assignments([], empty.astype(np.int64), empty, empty, part.skipped)


def write_skipped(path: Path, skipped: Sequence[tuple[str, str]]) -> None:
    """CSV of files that could not be used, with the reason; removed when there are none."""
    if not skipped:
        Path(path).unlink(missing_ok=True)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(skipped)
    write_atomic(Path(path), buffer.getvalue().encode())


def skipped_summary(
    skipped: Sequence[tuple[str, str]], listed_in: Path | None = None, shown: int = 20
) -> str:
    """Lines for the console: each skipped file with its reason (the first `shown` of them)."""
    if not skipped:
        return ""
    where = f"; all are listed in {listed_in}" if listed_in else ""
    lines = [f"skipped {len(skipped)} file(s) that could not be used{where}:"]
    lines += [f"  {p}: {reason}" for p, reason in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more")
    return "\n".join(lines)


def cluster_sizes(clusters: np.ndarray, k: int) -> str:
    return format_counts(np.bincount(np.asarray(clusters, dtype=np.int64), minlength=k))


def format_counts(counts: np.ndarray) -> str:
    return ", ".join(f"{i}: {n}" for i, n in enumerate(counts))


def load_for(clusterer: ImageClusterer, source: str | Path) -> ImageSet:
    """Load images the way a fitted clusterer expects them (its size and channel count)."""
    model = clusterer.config_.model
    return load_images(
        source, image_size=model.image_size, channels=model.channels, progress=clusterer.progress
    )
