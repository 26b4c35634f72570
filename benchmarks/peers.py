"""The peers aegmm is compared with, each fitted on one set of images and applied to another.

Every peer takes uint8 images, works on raw pixels scaled to [0, 1] and returns an `Outcome`:
the cluster of each scored image and its label-free scores, each oriented beforehand so that a
higher value should mean FAKE (none of them is flipped afterwards).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

PCA_DIM = 50  # PCA components of the pixel peers (N2D and the GMM baseline)
UMAP_NEIGHBORS = 20  # N2D's n_neighbors
N_INIT = 3  # restarts of K-Means and of every GaussianMixture here (aegmm's default n_init)
REG_COVAR = 1e-4  # aegmm's default reg_covar
GMM_MAX_ITER = 300  # aegmm's default max_iter


@dataclass
class Outcome:
    labels: np.ndarray  # cluster of each scored image
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # name -> score (higher = FAKE)
    notes: dict = field(default_factory=dict)


Peer = Callable[[np.ndarray, np.ndarray, int, int], Outcome]  # (fit, score, K, seed) -> Outcome


def pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def pca_size(fit: np.ndarray) -> int:
    """PCA_DIM components, or as many as the fitted images span (one fewer than their count: whitening
    would divide by the last one's zero variance)."""
    return min(PCA_DIM, fit[0].size, len(fit) - 1)


def gmm(k: int, seed: int) -> GaussianMixture:
    return GaussianMixture(
        n_components=k,
        covariance_type="full",
        n_init=N_INIT,
        reg_covar=REG_COVAR,
        max_iter=GMM_MAX_ITER,
        random_state=seed,
    )


def gmm_outcome(model: GaussianMixture, features: np.ndarray) -> Outcome:
    """Clusters plus the two label-free scores of a mixture: NLL and 1 - max posterior."""
    proba = model.predict_proba(features)
    return Outcome(
        labels=proba.argmax(axis=1),
        scores={"nll": -model.score_samples(features), "uncertainty": 1.0 - proba.max(axis=1)},
        notes={"converged": bool(model.converged_), "n_iter": int(model.n_iter_)},
    )


def fit_gmm(features: np.ndarray, k: int, seed: int) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gmm(k, seed).fit(features)


def kmeans_pixels(fit: np.ndarray, score: np.ndarray, k: int, seed: int) -> Outcome:
    """K-Means (k-means++, 3 restarts) on raw pixels; score: distance to the nearest centroid."""
    model = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(pixels(fit))
    distances = model.transform(pixels(score))
    return Outcome(
        labels=distances.argmin(axis=1),
        scores={"distance": distances.min(axis=1)},
        notes={"n_iter": int(model.n_iter_)},
    )


def gmm_pca(fit: np.ndarray, score: np.ndarray, k: int, seed: int) -> Outcome:
    """Full-covariance GMM on 50 whitened PCA components of the pixels."""
    pca = PCA(n_components=pca_size(fit), whiten=True, random_state=seed).fit(pixels(fit))
    model = fit_gmm(pca.transform(pixels(fit)), k, seed)
    outcome = gmm_outcome(model, pca.transform(pixels(score)))
    outcome.notes["pca_explained_variance"] = round(float(pca.explained_variance_ratio_.sum()), 4)
    return outcome


def umap_gmm(fit: np.ndarray, score: np.ndarray, k: int, seed: int) -> Outcome:
    """N2D's recipe without its autoencoder: PCA(50) -> UMAP(K dims, 20 neighbours, min_dist 0) -> GMM.

    Scored images that were not fitted are placed with UMAP's own `transform`. UMAP's compiled
    functions are kept on disk as aegmm keeps its own, so neither pays numba's compilation twice.
    """
    from aegmm.embedding import import_umap

    umap = import_umap()
    pca = PCA(n_components=pca_size(fit), random_state=seed).fit(pixels(fit))
    reducer = umap.UMAP(n_components=k, n_neighbors=UMAP_NEIGHBORS, min_dist=0.0, random_state=seed, n_jobs=1)
    embedded = reducer.fit_transform(pca.transform(pixels(fit)))
    placed = embedded if score is fit else reducer.transform(pca.transform(pixels(score)))
    return gmm_outcome(fit_gmm(embedded, k, seed), placed)


PEERS: dict[str, Peer] = {
    "kmeans_pixels": kmeans_pixels,
    "gmm_pca50": gmm_pca,
    "pca_umap_gmm": umap_gmm,
}

PEER_TITLES = {
    "kmeans_pixels": "K-Means on raw pixels",
    "gmm_pca50": "GMM on 50 whitened PCA comps",
    "pca_umap_gmm": "PCA(50) -> UMAP(K) -> GMM (N2D w/o AE)",
    "clustimage": "clustimage (defaults)",
}

# `pip install --dry-run clustimage` (clustimage 1.7.1) on this machine would add these 31
# packages to the environment; the brief says to skip it when it pulls heavy dependencies.
CLUSTIMAGE_NOTE = (
    "not installable here: pip would add 31 packages, among them opencv-python-headless, "
    "scikit-image, statsmodels, pandas, seaborn, folium and geopy (dry run of `pip install clustimage` "
    "1.7.1); skipped as the brief asks for heavy dependencies"
)
