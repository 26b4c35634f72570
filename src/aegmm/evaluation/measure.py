"""Measuring a fitted clusterer on images: ``measure`` computes everything the report shows.

It reads and writes no file. The images are encoded and reconstructed in one pass, then mapped to
what the mixture sees (``mixture_.features``: standardised, then reduced), "the features" below.
The saved mixture is scored as it is; every refit (CV, seeds, other K, K-Means, domain mixtures)
uses the model's K, covariance type and reg_covar. Each step is a function of the scored images
(and of the K-Means clusters for the label step) that returns its own part of the evaluation.

The keys of ``Evaluation.metrics`` are those of metrics.json (``aegmm.evaluation.schema``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.manifold import TSNE
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from aegmm.data import ImageSet
from aegmm.evaluation import image_scores, plots
from aegmm.evaluation.baselines import kmeans_likelihood, kmeans_pixels, mixture_refits
from aegmm.evaluation.domains import MAX_DOMAINS, analyse_domains, domain_figures, select_domains
from aegmm.evaluation.metrics import gmm_information, label_agreement, reconstruction_quality
from aegmm.evaluation.schema import SCHEMA_VERSION
from aegmm.mixture import LatentMixture
from aegmm.pipeline import ImageClusterer

TSNE_LIMIT = 1500  # points embedded by t-SNE at most (a seeded random sample beyond)


@dataclass(frozen=True)
class Evaluation:
    """What ``measure`` found: metrics.json's content, the figures as PNG bytes, notes for the reader."""

    metrics: dict
    figures: dict[str, bytes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __add__(self, other: Evaluation) -> Evaluation:
        return Evaluation(
            self.metrics | other.metrics, self.figures | other.figures, self.notes + other.notes
        )


def _part(metrics: dict | None = None, figures: dict | None = None, notes=()) -> Evaluation:
    """One step's share, figures rendered to PNG bytes."""
    pngs = {name: plots.to_png(figure) for name, figure in (figures or {}).items()}
    return Evaluation(metrics or {}, pngs, tuple(notes))


@dataclass(frozen=True)
class Scored:
    """The images as the saved model sees them; computed once, read by every step."""

    data: ImageSet
    features: np.ndarray  # (N, D) what the mixture sees
    proba: np.ndarray  # (N, K) posterior probabilities under the saved mixture
    loglik: np.ndarray  # (N,) log-likelihood under the saved mixture
    image_scores: dict[str, np.ndarray]  # label-free per-image scores (image_scores.SCORE_NAMES)
    gmm: GaussianMixture
    mixture_config: object  # the run's MixtureConfig: settings of every refit
    seed: int
    positive: str | None  # the positive (generated) domain, None: decided from the names

    @property
    def k(self) -> int:
        return int(self.gmm.n_components)

    @property
    def clusters(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


def measure(
    clusterer: ImageClusterer,
    data: ImageSet,
    *,
    seed: int = 0,
    positive: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Evaluation:
    """Every measurement of the report for ``clusterer`` on ``data`` (images already conformed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scored, result = _autoencoder(clusterer, data, seed, positive, log)
        # many small fits: one BLAS/OpenMP thread each, which avoids threads contending for busy cores
        with threadpool_limits(limits=1):
            result += _mixture(scored, clusterer.mixture_, log)
            kmeans, clusters = _kmeans(scored, log)
            result += kmeans
            for step in (_labels, _domains, _feature_space, _galleries):
                result += step(scored, clusters, log)
    return result


def header(clusterer: ImageClusterer, data: ImageSet, name: str) -> dict:
    """The first keys of metrics.json: what was measured on what."""
    gmm = clusterer.mixture_.gmm_
    return {
        "schema_version": SCHEMA_VERSION,
        "data": name,
        "n_images": len(data),
        "skipped": len(data.skipped),
        "objective": clusterer.config_.train.objective,
        "members": int(clusterer.config_.train.members),
        "k": int(gmm.n_components),
        "covariance_type": str(gmm.covariance_type),
        "n_features": int(gmm.means_.shape[1]),
    }


# -- the measurements, in the order of the report ------------------------------------------------


def _autoencoder(clusterer: ImageClusterer, data: ImageSet, seed: int, positive, log):
    images, objective = data.images, clusterer.config_.train.objective
    figures = {
        "loss": plots.loss_history(clusterer.history_, objective=objective),
        "encoded": _encoded_images(clusterer, images[np.linspace(0, len(images) - 1, 3).astype(int)]),
    }
    scores = {"high_frequency": image_scores.high_frequency(images)}
    metrics = {"reconstruction_mse": None, "psnr": None}
    if objective == "contrastive":  # its decoder was never trained
        log("encoding the images (a contrastive run has no reconstructions)")
        latents = clusterer.transform(images)
    else:
        log("encoding and reconstructing the images")
        latents, reconstructions = clusterer.reconstruct(images, return_latents=True)  # one pass
        quality = reconstruction_quality(images / 255.0, reconstructions)
        metrics = {"reconstruction_mse": quality["mse"], "psnr": quality["psnr"]}
        shown = np.unique(np.linspace(0, len(images) - 1, 10).astype(int))
        grid = [list(images[shown]), list(reconstructions[shown])]
        figures["reconstructions"] = plots.image_mosaic(grid, row_labels=["original", "reconstruction"])
        scores["reconstruction"] = image_scores.reconstruction(images, reconstructions)
    features, proba, loglik = clusterer.mixture_.score(latents, with_features=True)  # as assign scores
    gmm = clusterer.mixture_.gmm_
    config = clusterer.mixture_.config
    scored = Scored(data, features, proba, loglik, scores, gmm, config, seed, positive)
    return scored, _part(metrics, figures)


@torch.inference_mode()
def _encoded_images(clusterer: ImageClusterer, images: np.ndarray):
    encoder = clusterer.autoencoder_.encoder.eval()
    device = next(encoder.parameters()).device
    maps = encoder.feature_maps(clusterer.normalizer_.to_tensor(images, device))
    arrays = [m.float().cpu().numpy() for m in maps]
    names = ["stem"] + [f"stage {i}" for i in range(1, len(arrays))]
    return plots.feature_maps_grid(images, arrays, names)


def _mixture(s: Scored, fitted: LatentMixture, log) -> Evaluation:
    log("measuring the mixture: log-likelihood, 5-fold CV, 10 seeds, BIC and AIC against K")
    metrics = gmm_information(s.gmm, s.features)
    metrics.update(mixture_refits(s.features, s.k, s.mixture_config, s.seed))
    if len(fitted.bic_curve_) > 1:
        ks = sorted(fitted.bic_curve_)
        metrics["training_bic_curve"] = {"k": ks, "bic": [fitted.bic_curve_[k] for k in ks]}
    if len(fitted.agreement_) > 1:
        seeds = sorted(fitted.agreement_)
        tried = {"rule": fitted.config.candidate_rule, "seed": seeds}
        tried["agreement"] = [fitted.agreement_[x] for x in seeds]
        if fitted.evenness_:  # runs saved before the balance rule recorded no evenness
            tried["evenness"] = [fitted.evenness_[x] for x in seeds]
        if len(set(fitted.candidate_scalings_.values())) > 1:  # normalize "both"
            tried["scaling"] = [fitted.candidate_scalings_[x] for x in seeds]
            tried["kept"] = fitted.kept_
        metrics["training_candidates"] = tried
    figure = plots.information_criteria(metrics["information_curve"], s.k)
    return _part({"gmm": metrics}, {"information_criteria": figure})


def _kmeans(s: Scored, log) -> tuple[Evaluation, np.ndarray]:
    log("K-Means on the same features, as a likelihood model")
    try:
        metrics, clusters = kmeans_likelihood(s.features, s.k, s.seed)
        return _part({"kmeans": metrics}), clusters
    except ValueError as exc:
        note = f"K-Means could not be read as a likelihood model ({exc}); its numbers are left out."
        clusters = KMeans(n_clusters=s.k, n_init=3, random_state=s.seed).fit_predict(s.features)
        return _part(notes=[note]), clusters


def _labels(s: Scored, kmeans_clusters: np.ndarray, log) -> Evaluation:
    data = s.data
    if not data.has_labels:
        return _part(
            notes=[
                "The images have no labels: the agreement with labels (accuracy, NMI, ARI, purity, "
                "contingency tables) and K-Means on pixels are left out."
            ]
        )
    log("agreement with the labels; K-Means on raw pixels")
    pixels, n_fit = kmeans_pixels(data.images, s.k, s.seed)
    notes = (
        [f"K-Means on pixels was fitted on a random sample of {n_fit:,} images."] if n_fit < len(data) else []
    )
    present = np.unique(data.labels)
    metrics = {
        "labels": {
            "names": [str(data.label_names[i]) for i in present],
            **label_agreement(data.labels, s.clusters),
        },
        "kmeans_latent": label_agreement(data.labels, kmeans_clusters),
        "kmeans_pixels": {**label_agreement(data.labels, pixels), "n_fit": n_fit},
    }
    predictions = {
        "Gaussian mixture": s.clusters,
        "K-Means on the features": kmeans_clusters,
        "K-Means on pixels": pixels,
    }
    figure = plots.contingency_panels(data.labels, predictions, data.label_names)
    return _part(metrics, {"contingency": figure}, notes)


def _domains(s: Scored, kmeans_clusters: np.ndarray, log) -> Evaluation:
    data, view = s.data, s.data.domain_view()
    if view is None:
        return _part(notes=["The images have neither domains nor labels: the domain analysis is left out."])
    codes, names, notes = select_domains(np.asarray(view[0]), view[1], s.k)
    notes = list(notes)
    if not 2 <= len(names) <= MAX_DOMAINS:
        notes.append(
            f"The domain analysis needs 2 to {MAX_DOMAINS} domains with enough images, got {len(names)}; "
            "it is left out."
        )
        return _part(notes=notes)
    log(f"domains {', '.join(names)}: a mixture per domain, KL, AUROC")
    keep = codes >= 0
    try:
        scores = {name: values[keep] for name, values in s.image_scores.items()}
        analysis = analyse_domains(
            s.features[keep],
            codes[keep],
            names,
            s.gmm,
            s.clusters[keep],
            s.mixture_config,
            s.seed,
            scores,
            s.positive,
        )
    except ValueError as exc:  # e.g. a domain whose features are too degenerate for its own mixture
        return _part(notes=[*notes, f"The domain analysis failed and is left out: {exc}"])
    source = "domains" if data.domains is not None and data.domain_names is not None else "labels"
    return _part({"domains": {"source": source, **analysis.metrics}}, domain_figures(analysis, names), notes)


def _feature_space(s: Scored, kmeans_clusters: np.ndarray, log) -> Evaluation:
    x, clusters, data = s.features, s.clusters, s.data
    padded = np.pad(x, ((0, 0), (0, max(0, 2 - x.shape[1]))))  # PCA to 2-D needs 2 features
    pca = PCA(n_components=2, random_state=s.seed).fit(padded)
    means = np.pad(s.gmm.means_, ((0, 0), (0, padded.shape[1] - x.shape[1])))
    sample, notes = np.arange(len(x)), []
    if len(x) > TSNE_LIMIT:
        sample = np.sort(np.random.default_rng(s.seed).choice(len(x), TSNE_LIMIT, replace=False))
        notes.append(f"t-SNE embeds a random sample of {TSNE_LIMIT:,} of the {len(x):,} images.")
    log(f"t-SNE of {len(sample):,} feature vectors")
    perplexity = min(30.0, (len(sample) - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=s.seed)
    embedded = tsne.fit_transform(x[sample])
    centroids = np.full((s.k, 2), np.nan)
    for c in np.unique(clusters[sample]):
        centroids[c] = embedded[clusters[sample] == c].mean(axis=0)
    views = {"pca": (pca.transform(padded), pca.transform(means), np.arange(len(x)), "PCA")}
    views["tsne"] = (embedded, centroids, sample, "t-SNE")
    figures = {}
    for name, (points, centers, index, method) in views.items():
        labels = (data.labels[index], data.label_names) if data.has_labels else None
        figures[name] = plots.feature_views(points, clusters[index], s.k, centers, labels, method=method)
    return _part(figures=figures, notes=notes)


def _galleries(s: Scored, kmeans_clusters: np.ndarray, log) -> Evaluation:
    log("cluster galleries")
    clusters = s.clusters
    picked = s.proba[np.arange(len(clusters)), clusters]
    typicality = np.log(np.maximum(picked, 1e-300)) + s.loglik  # log p(x, cluster of x)
    return _part(figures={"galleries": plots.cluster_galleries(s.data.images, clusters, typicality, s.k)})
