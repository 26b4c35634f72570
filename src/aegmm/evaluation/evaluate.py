"""``evaluate_run``: load a run, ``measure`` it on images, render the report and write it.

The report folder holds report.html, metrics.json (keys in ``aegmm.evaluation.schema``) and
figures/*.png. ``measure`` (evaluation/measure.py) computes; this module reads and writes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from aegmm.data import ImageSet
from aegmm.evaluation.baselines import N_SPLITS
from aegmm.evaluation.domains import positive_domain
from aegmm.evaluation.measure import Evaluation, header, measure
from aegmm.evaluation.report import render_report
from aegmm.evaluation.schema import schema
from aegmm.folders import check_output, input_paths, prepare_output
from aegmm.pipeline import ImageClusterer, load
from aegmm.preprocess import conform_images
from aegmm.progress import say
from aegmm.runs import SKIPPED, load_for, skipped_summary, write_skipped
from aegmm.storage import write_atomic, write_json

REPORT, METRICS, FIGURES = "report.html", "metrics.json", "figures"


def evaluate_run(
    run: Path,
    data_source: str | Path | ImageSet,
    out: Path,
    *,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    positive: str | None = None,
    device: str = "auto",
    batch_size: int = 128,
) -> Path:
    """Measure the run in ``run`` on ``data_source`` and write the report; returns report.html.

    ``positive`` names the generated (fake, simulated) domain, the positive class of every
    AUROC; without it the domain names decide (``domains.positive_domain``).

    ``out`` must be empty or missing unless ``force`` (which replaces only a folder aegmm wrote),
    and must not overlap the run or the data; it is checked before any work and filled only at
    the end (report.html last), so a failure never leaves a half-written report.
    """
    started = time.perf_counter()
    log = _logger(progress, started)
    run, out = Path(run), Path(out)
    sources = input_paths(run, data_source)
    check_output(out, inputs=sources, force=force)
    clusterer = load(run, progress=progress).set_params(device=device, encode_batch_size=batch_size)
    data = _load_data(clusterer, data_source)
    if data.skipped:
        print(skipped_summary(data.skipped, listed_in=out / SKIPPED), file=sys.stderr)
    _check_enough_images(len(data), clusterer.n_components_)
    _check_positive(data, positive)
    log(f"evaluating {run} (K={clusterer.n_components_}) on {len(data):,} images")
    name = (data.source or "an ImageSet") if isinstance(data_source, ImageSet) else str(data_source)
    found = Evaluation(header(clusterer, data, name)) + measure(
        clusterer, data, seed=seed, positive=positive, log=log
    )
    found = replace(found, metrics=found.metrics | {"seconds": round(time.perf_counter() - started, 2)})
    log("writing the report")
    prepare_output(out, inputs=sources, force=force)
    write_report(out, found, render(found, run=str(run), history=clusterer.history_), data.skipped)
    return out / REPORT


def render(evaluation: Evaluation, *, run: str, history: list[dict]) -> str:
    """The self-contained HTML page of an evaluation."""
    return render_report(
        metrics=evaluation.metrics,
        figures=evaluation.figures,
        notes=list(evaluation.notes),
        run=run,
        schema=schema(),
        history=history,
    )


def write_report(out: Path, evaluation: Evaluation, html: str, skipped=()) -> None:
    """Fill a prepared report folder: skipped files, figures, metrics.json, report.html last."""
    write_skipped(out / SKIPPED, list(skipped))
    for name, png in evaluation.figures.items():
        write_atomic(out / FIGURES / f"{name}.png", png)
    write_json(out / METRICS, _jsonable(evaluation.metrics))
    write_atomic(out / REPORT, html.encode("utf-8"))


def _logger(enabled: bool, started: float) -> Callable[[str], None]:
    def log(message: str) -> None:
        say(f"evaluate [{time.perf_counter() - started:6.1f} s] {message}", enabled=enabled)

    return log


def _load_data(clusterer: ImageClusterer, source) -> ImageSet:
    if isinstance(source, ImageSet):
        model = clusterer.config_.model
        return replace(source, images=conform_images(source.images, model.image_size, model.channels))
    if not isinstance(source, str | Path):
        raise TypeError(
            f"expected the data as a path, a 'builtin:' name or an ImageSet, got {type(source).__name__}"
        )
    return load_for(clusterer, source)


def _check_enough_images(n: int, k: int) -> None:
    if n < max(10, 2 * k):
        need = f"{max(10, 2 * k)} images for a K={k} mixture ({N_SPLITS}-fold cross-validation refits it)"
        raise ValueError(f"evaluation needs at least {need}, got {n}")


def _check_positive(data: ImageSet, positive: str | None) -> None:
    if positive is None:
        return
    view = data.domain_view()
    if view is None:
        raise ValueError(f"--positive {positive!r} needs images with domains or labels; these have neither")
    positive_domain(view[1], positive)  # raises when it names none of them


# -- writing -------------------------------------------------------------------------------------


def _jsonable(value):
    """Plain JSON values: numpy scalars and arrays converted, non-finite floats as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
