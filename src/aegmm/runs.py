"""Run folders: fitting into one, assigning new images with one, and the files they hold."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import distributed
from .data import ImageSet, load_images
from .folders import check_output_file, input_paths, prepare_output, remove_if_unused
from .pipeline import Assignments, ImageClusterer
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


def fit_into(
    data: ImageSet, out: Path, clusterer: ImageClusterer, *, resume: bool = False, force: bool = False
) -> tuple[ImageClusterer, Assignments | None]:
    """Check K, create `out` (rank 0 only) and fit into it.

    `out` must not overlap the folder or file the images came from (``data.source``). If the
    fit fails, a folder created here that is still empty is removed again; a folder holding
    checkpoints is kept, so that `--resume` can continue the work.
    """
    check_cluster_count(clusterer, len(data))
    created = False
    if distributed.is_main():
        inputs = input_paths(data.source)
        created = prepare_output(out, inputs=inputs, resume=resume, force=force, resumable=True)
    try:
        return fit_run(data, out, clusterer, resume=resume)
    except BaseException:
        if created:
            remove_if_unused(out)
        raise


def fit_run(
    data: ImageSet, out: Path, clusterer: ImageClusterer, *, resume: bool = False
) -> tuple[ImageClusterer, Assignments | None]:
    """Fit on `data`, save the model in `out`, and write the training images' assignments.

    Under torchrun every process trains; only rank 0 saves (the others return no table).
    """
    clusterer.fit(data, checkpoint_dir=out / CHECKPOINTS, resume=resume)
    if not distributed.is_main():
        return clusterer, None
    clusterer.save(out)
    assignments = clusterer.training_assignments_  # from the encoding that fitted the mixture
    write_assignments(out / ASSIGNMENTS, assignments)
    write_skipped(out / SKIPPED, data.skipped)
    return clusterer, assignments


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
    from .data.chunks import iter_chunks
    from .progress import bar

    model = clusterer.config_.model
    inputs = [*inputs, *input_paths(source)]
    check_output_file(Path(path), inputs=inputs, flag="--out", written_by_aegmm=is_assignment_csv)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.partial")
    counts = np.zeros(clusterer.n_components_, dtype=np.int64)
    skipped: list[tuple[str, str]] = []
    progress = bar(enabled=clusterer.progress, desc="assigning", unit="image")
    try:
        with progress, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(ASSIGNMENT_COLUMNS)
            chunks = iter_chunks(
                source,
                image_size=model.image_size,
                channels=model.channels,
                chunk=chunk,
                on_total=progress.reset,
            )
            for part in chunks:
                table = clusterer.assign(part) if len(part) else _empty_table(part)
                _write_rows(writer, table)
                counts += np.bincount(table.cluster, minlength=len(counts))
                skipped += part.skipped
                if sink is not None:
                    sink.add(part, table)
                progress.update(len(part) + len(part.skipped))
        if not counts.sum():
            raise ValueError(f"no readable images in {source} ({len(skipped)} files skipped)")
        os.replace(tmp, path)
    except BaseException:  # an error or an interrupt: no partial CSV is left behind
        tmp.unlink(missing_ok=True)
        raise
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
