"""Evaluate a fitted run on images: ``evaluate_run`` writes report.html, metrics.json, figures/*.png.

The images are encoded and mapped to what the mixture sees (``mixture_.features``: standardised,
then reduced), "the features" below. The saved mixture is scored as it is; every refit (CV, seeds,
other K, K-Means, domain mixtures) uses the model's K, covariance type and reg_covar.

The keys of metrics.json are documented in ``aegmm.evaluation.schema``.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.manifold import TSNE
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from aegmm.data import ImageSet
from aegmm.data.loaders import conform_images
from aegmm.evaluation import image_scores, plots
from aegmm.evaluation.baselines import N_SPLITS, kmeans_likelihood, kmeans_pixels, mixture_refits
from aegmm.evaluation.domains import (
    MAX_DOMAINS,
    analyse_domains,
    domain_figures,
    positive_domain,
    select_domains,
)
from aegmm.evaluation.metrics import gmm_information, label_agreement, reconstruction_quality
from aegmm.evaluation.report import render_report
from aegmm.evaluation.schema import SCHEMA_VERSION, schema
from aegmm.folders import check_output, input_paths, prepare_output
from aegmm.io import load
from aegmm.pipeline import ImageClusterer
from aegmm.progress import say
from aegmm.runs import SKIPPED, load_for, skipped_summary, write_skipped
from aegmm.storage import write_atomic, write_json

REPORT, METRICS, FIGURES = "report.html", "metrics.json", "figures"
TSNE_LIMIT = 1500  # points embedded by t-SNE at most (a seeded random sample beyond)


@dataclass
class _Inputs:
    clusterer: ImageClusterer
    data: ImageSet
    features: np.ndarray  # (N, D) what the mixture sees
    proba: np.ndarray  # (N, K) posterior probabilities under the saved mixture
    loglik: np.ndarray  # (N,) log-likelihood under the saved mixture
    seed: int
    image_scores: dict[str, np.ndarray]  # label-free per-image scores (image_scores.SCORE_NAMES)
    positive: str | None = None  # the positive (generated) domain, None: decided from the names
    kmeans_clusters: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.gmm: GaussianMixture = self.clusterer.mixture_.gmm_
        self.k = int(self.gmm.n_components)

    @property
    def clusters(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


@dataclass
class _Results:
    metrics: dict
    figures: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, figure) -> None:
        self.figures[name] = plots.to_png(figure)


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
    results = _Results(metrics=_header(clusterer, data, data_source))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        inputs = _autoencoder(clusterer, data, seed, results, log)
        inputs.positive = positive
        # many small fits: one BLAS/OpenMP thread each, which avoids threads contending for busy cores
        with threadpool_limits(limits=1):
            for step in (_mixture, _kmeans, _labels, _domains, _feature_space, _galleries):
                step(inputs, results, log)
    results.metrics["seconds"] = round(time.perf_counter() - started, 2)
    html = render_report(
        metrics=results.metrics,
        figures=results.figures,
        notes=results.notes,
        run=str(run),
        schema=schema(),
        history=clusterer.history_,
    )
    _write(out, sources, force, results, html, data.skipped)
    return out / REPORT


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


def _header(clusterer: ImageClusterer, data: ImageSet, source) -> dict:
    name = (data.source or "an ImageSet") if isinstance(source, ImageSet) else str(source)
    gmm = clusterer.mixture_.gmm_
    return {
        "schema_version": SCHEMA_VERSION,
        "data": name,
        "n_images": len(data),
        "skipped": len(data.skipped),
        "k": int(gmm.n_components),
        "covariance_type": str(gmm.covariance_type),
        "n_features": int(gmm.means_.shape[1]),
    }


# -- the measurements, in the order of the report ------------------------------------------------


def _autoencoder(clusterer: ImageClusterer, data: ImageSet, seed: int, results: _Results, log) -> _Inputs:
    log("encoding and reconstructing the images")
    images = data.images
    latents = clusterer.transform(images)
    reconstructions = clusterer.reconstruct(images)
    quality = reconstruction_quality(images / 255.0, reconstructions)
    results.metrics.update(reconstruction_mse=quality["mse"], psnr=quality["psnr"])
    results.add("loss", plots.loss_history(clusterer.history_))
    shown = np.unique(np.linspace(0, len(images) - 1, 10).astype(int))
    grid = [list(images[shown]), list(reconstructions[shown])]
    results.add("reconstructions", plots.image_mosaic(grid, row_labels=["original", "reconstruction"]))
    results.add("encoded", _encoded_images(clusterer, images[np.linspace(0, len(images) - 1, 3).astype(int)]))
    features = clusterer.mixture_.features(latents)
    gmm = clusterer.mixture_.gmm_
    scores = {
        "high_frequency": image_scores.high_frequency(images),
        "reconstruction": image_scores.reconstruction(images, reconstructions),
    }
    proba, loglik = gmm.predict_proba(features), gmm.score_samples(features)
    return _Inputs(clusterer, data, features, proba, loglik, seed, scores)


@torch.inference_mode()
def _encoded_images(clusterer: ImageClusterer, images: np.ndarray):
    encoder = clusterer.autoencoder_.encoder.eval()
    device = next(encoder.parameters()).device
    maps = encoder.feature_maps(clusterer.normalizer_.to_tensor(images, device))
    arrays = [m.float().cpu().numpy() for m in maps]
    names = ["stem"] + [f"stage {i}" for i in range(1, len(arrays))]
    return plots.feature_maps_grid(images, arrays, names)


def _mixture(inputs: _Inputs, results: _Results, log) -> None:
    log("measuring the mixture: log-likelihood, 5-fold CV, 10 seeds, BIC and AIC against K")
    mixture = inputs.clusterer.mixture_
    metrics = gmm_information(inputs.gmm, inputs.features)
    metrics.update(mixture_refits(inputs.features, inputs.k, mixture.config, inputs.seed))
    if len(mixture.bic_curve_) > 1:
        ks = sorted(mixture.bic_curve_)
        metrics["training_bic_curve"] = {"k": ks, "bic": [mixture.bic_curve_[c] for c in ks]}
    results.metrics["gmm"] = metrics
    results.add("information_criteria", plots.information_criteria(metrics["information_curve"], inputs.k))


def _kmeans(inputs: _Inputs, results: _Results, log) -> None:
    log("K-Means on the same features, as a likelihood model")
    try:
        results.metrics["kmeans"], inputs.kmeans_clusters = kmeans_likelihood(
            inputs.features, inputs.k, inputs.seed
        )
    except ValueError as exc:
        results.notes.append(
            f"K-Means could not be read as a likelihood model ({exc}); its numbers are left out."
        )
        kmeans = KMeans(n_clusters=inputs.k, n_init=3, random_state=inputs.seed)
        inputs.kmeans_clusters = kmeans.fit_predict(inputs.features)


def _labels(inputs: _Inputs, results: _Results, log) -> None:
    data = inputs.data
    if not data.has_labels:
        results.notes.append(
            "The images have no labels: the agreement with labels (accuracy, NMI, ARI, purity, "
            "contingency tables) and K-Means on pixels are left out."
        )
        return
    log("agreement with the labels; K-Means on raw pixels")
    pixels, n_fit = kmeans_pixels(data.images, inputs.k, inputs.seed)
    if n_fit < len(data):
        results.notes.append(f"K-Means on pixels was fitted on a random sample of {n_fit:,} images.")
    present = np.unique(data.labels)
    results.metrics["labels"] = {
        "names": [str(data.label_names[i]) for i in present],
        **label_agreement(data.labels, inputs.clusters),
    }
    results.metrics["kmeans_latent"] = label_agreement(data.labels, inputs.kmeans_clusters)
    results.metrics["kmeans_pixels"] = {**label_agreement(data.labels, pixels), "n_fit": n_fit}
    predictions = {
        "Gaussian mixture": inputs.clusters,
        "K-Means on the features": inputs.kmeans_clusters,
        "K-Means on pixels": pixels,
    }
    results.add("contingency", plots.contingency_panels(data.labels, predictions, data.label_names))


def _domains(inputs: _Inputs, results: _Results, log) -> None:
    data, view = inputs.data, inputs.data.domain_view()
    if view is None:
        results.notes.append("The images have neither domains nor labels: the domain analysis is left out.")
        return
    codes, names, notes = select_domains(np.asarray(view[0]), view[1], inputs.k)
    results.notes.extend(notes)
    if not 2 <= len(names) <= MAX_DOMAINS:
        results.notes.append(
            f"The domain analysis needs 2 to {MAX_DOMAINS} domains with enough images, got {len(names)}; "
            "it is left out."
        )
        return
    log(f"domains {', '.join(names)}: a mixture per domain, KL, AUROC")
    keep = codes >= 0
    config = inputs.clusterer.mixture_.config
    try:
        scores = {name: values[keep] for name, values in inputs.image_scores.items()}
        features, clusters = inputs.features[keep], inputs.clusters[keep]
        analysis = analyse_domains(
            features, codes[keep], names, inputs.gmm, clusters, config, inputs.seed, scores, inputs.positive
        )
    except ValueError as exc:  # e.g. a domain whose features are too degenerate for its own mixture
        results.notes.append(f"The domain analysis failed and is left out: {exc}")
        return
    source = "domains" if data.domains is not None and data.domain_names is not None else "labels"
    results.metrics["domains"] = {"source": source, **analysis.metrics}
    for name, figure in domain_figures(analysis, names).items():
        results.add(name, figure)


def _feature_space(inputs: _Inputs, results: _Results, log) -> None:
    x, clusters, data = inputs.features, inputs.clusters, inputs.data
    padded = np.pad(x, ((0, 0), (0, max(0, 2 - x.shape[1]))))  # PCA to 2-D needs 2 features
    pca = PCA(n_components=2, random_state=inputs.seed).fit(padded)
    means = np.pad(inputs.gmm.means_, ((0, 0), (0, padded.shape[1] - x.shape[1])))
    sample = np.arange(len(x))
    if len(x) > TSNE_LIMIT:
        sample = np.sort(np.random.default_rng(inputs.seed).choice(len(x), TSNE_LIMIT, replace=False))
        results.notes.append(f"t-SNE embeds a random sample of {TSNE_LIMIT:,} of the {len(x):,} images.")
    log(f"t-SNE of {len(sample):,} feature vectors")
    perplexity = min(30.0, (len(sample) - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=inputs.seed)
    embedded = tsne.fit_transform(x[sample])
    centroids = np.full((inputs.k, 2), np.nan)
    for c in np.unique(clusters[sample]):
        centroids[c] = embedded[clusters[sample] == c].mean(axis=0)
    views = {"pca": (pca.transform(padded), pca.transform(means), np.arange(len(x)), "PCA")}
    views["tsne"] = (embedded, centroids, sample, "t-SNE")
    for name, (points, centers, index, method) in views.items():
        labels = (data.labels[index], data.label_names) if data.has_labels else None
        figure = plots.feature_views(points, clusters[index], inputs.k, centers, labels, method=method)
        results.add(name, figure)


def _galleries(inputs: _Inputs, results: _Results, log) -> None:
    log("cluster galleries and writing the report")
    clusters = inputs.clusters
    picked = inputs.proba[np.arange(len(clusters)), clusters]
    typicality = np.log(np.maximum(picked, 1e-300)) + inputs.loglik  # log p(x, cluster of x)
    figure = plots.cluster_galleries(inputs.data.images, clusters, typicality, inputs.k)
    results.add("galleries", figure)


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


def _write(out: Path, sources: list[Path], force: bool, results: _Results, html: str, skipped) -> None:
    prepare_output(out, inputs=sources, force=force)
    write_skipped(out / SKIPPED, skipped)
    for name, png in results.figures.items():
        write_atomic(out / FIGURES / f"{name}.png", png)
    write_json(out / METRICS, _jsonable(results.metrics))
    write_atomic(out / REPORT, html.encode("utf-8"))
