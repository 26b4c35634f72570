"""Run folders: fitting into one, assigning new images with one, and the files they hold."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import distributed
from .data import ImageSet, load_images
from .pipeline import Assignments, ImageClusterer
from .storage import write_atomic

CHECKPOINTS = "checkpoint"
ASSIGNMENTS = "assignments.csv"
SKIPPED = "skipped.csv"


def check_output(out: Path, *, resume: bool = False, force: bool = False) -> None:
    """Refuse a file, or an existing non-empty folder unless resuming or forced; writes nothing."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out must be a folder, but {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (resume or force):
        raise FileExistsError(
            f"{out} already exists and is not empty; use --resume to continue it or --force to replace it"
        )


def prepare_output(out: Path, *, resume: bool = False, force: bool = False) -> None:
    """Check the output folder, then create it (emptied first when forced)."""
    check_output(out, resume=resume, force=force)
    if force and not resume and out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


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
    assignments = clusterer.assign(data)
    write_assignments(out / ASSIGNMENTS, assignments)
    write_skipped(out / SKIPPED, data.skipped)
    return clusterer, assignments


def write_assignments(path: Path, table: Assignments) -> None:
    """CSV: path,cluster,probability,log_likelihood,skipped; skipped files get an empty cluster."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "cluster", "probability", "log_likelihood", "skipped"])
    for p, c, prob, ll in zip(table.paths, table.cluster, table.probability, table.log_likelihood):
        writer.writerow([p, int(c), f"{prob:.6f}", f"{ll:.6f}", ""])
    for p, reason in table.skipped:
        writer.writerow([p, "", "", "", reason])
    write_atomic(Path(path), buffer.getvalue().encode())


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


def skipped_summary(skipped: Sequence[tuple[str, str]], shown: int = 5) -> str:
    if not skipped:
        return ""
    lines = [f"skipped {len(skipped)} file(s) that could not be used:"]
    lines += [f"  {p}: {reason}" for p, reason in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more")
    return "\n".join(lines)


def cluster_sizes(clusters: np.ndarray, k: int) -> str:
    counts = np.bincount(np.asarray(clusters, dtype=np.int64), minlength=k)
    return ", ".join(f"{i}: {n}" for i, n in enumerate(counts))


def load_for(clusterer: ImageClusterer, source: str | Path) -> ImageSet:
    """Load images the way a fitted clusterer expects them (its size and channel count)."""
    model = clusterer.config_.model
    return load_images(
        source, image_size=model.image_size, channels=model.channels, progress=clusterer.progress
    )
