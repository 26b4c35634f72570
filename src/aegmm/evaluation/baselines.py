"""What the saved mixture is compared with: the same mixture refitted, and K-Means.

``mixture_refits`` refits a GaussianMixture with the model's K, covariance type and reg_covar on
the features: 5-fold cross-validation, 10 seeds, and a range of K around the model's.
``kmeans_likelihood`` runs K-Means on the same feature vectors as the mixture, with the same K,
and reads it as a likelihood model (``KMeansGaussian``), so its log-likelihood, AIC, BIC and
cross-validated held-out log-likelihood sit beside the mixture's. ``kmeans_pixels`` clusters the
raw pixels; it has no likelihood worth comparing and is used only for the label metrics.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sklearn.cluster import KMeans

from aegmm.config import MixtureConfig
from aegmm.evaluation.metrics import (
    KMeansGaussian,
    bic_over_seeds,
    cross_validated_loglik,
    gmm_information,
    information_curve,
)
from aegmm.mixture import make_gmm

N_INIT = 3  # K-Means restarts, for every K-Means fit here
PIXEL_FIT_LIMIT = 5000  # images K-Means on pixels is fitted on at most (a random sample beyond)
N_SPLITS = 5  # folds of the cross-validated log-likelihoods
N_SEEDS = 10  # refits of the mixture for the stability of its BIC
K_SPAN = 4  # the information curve covers K - K_SPAN .. K + K_SPAN


def mixture_refits(features: np.ndarray, k: int, config: MixtureConfig, seed: int = 0) -> dict:
    """Mixtures refitted on ``features`` with the model's K and settings.

    Keys: ``cv_loglik`` (mean held-out log-likelihood per point in each of 5 folds, n_init=1),
    ``cv_loglik_mean``, ``bic_seeds`` (``mean``, ``std``, ``values`` over 10 seeds, n_init=1),
    ``refit`` (``log_likelihood``, ``bic``, ``aic`` of one refit with the model's n_init) and
    ``information_curve`` (``k``, ``bic``, ``aic`` for K around the model's).
    """
    one = replace(config, n_init=1)  # one EM run per refit; the refit below keeps the model's n_init
    cv = cross_validated_loglik(lambda: make_gmm(k, one, seed), features, n_splits=N_SPLITS, seed=seed)
    seeds = range(seed, seed + N_SEEDS)
    stability = bic_over_seeds(features, lambda s: make_gmm(k, one, s), seeds=seeds)
    refit = gmm_information(make_gmm(k, config, seed).fit(features), features)
    ks = [c for c in range(max(1, k - K_SPAN), k + K_SPAN + 1) if c <= len(features) // 2]
    curve = information_curve(features, ks, lambda c: make_gmm(c, one, seed))
    return {
        "cv_loglik": cv,
        "cv_loglik_mean": float(np.mean(cv)),
        "bic_seeds": stability,
        "refit": {key: refit[key] for key in ("log_likelihood", "bic", "aic")},
        "information_curve": curve,
    }


def kmeans_likelihood(features: np.ndarray, k: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    """K-Means as a likelihood model on ``features``: its information and the cluster of each point.

    The dict has ``log_likelihood``, ``mean_log_likelihood``, ``bic``, ``aic``, ``n_parameters``,
    ``cv_loglik`` (mean held-out log-likelihood per point in each of 5 folds) and
    ``cv_loglik_mean``.
    """

    def make() -> KMeansGaussian:
        return KMeansGaussian(n_clusters=k, seed=seed, n_init=N_INIT)

    model = make().fit(features)
    info = model.information(features)
    cv = cross_validated_loglik(make, features, n_splits=N_SPLITS, seed=seed)
    info.update(cv_loglik=cv, cv_loglik_mean=float(np.mean(cv)))
    return info, model.predict(features)


def kmeans_pixels(
    images: np.ndarray, k: int, seed: int = 0, fit_limit: int = PIXEL_FIT_LIMIT
) -> tuple[np.ndarray, int]:
    """K-Means on raw pixels scaled to [0, 1]: (cluster of every image, images it was fitted on).

    Beyond ``fit_limit`` images it is fitted on a random sample and predicts the rest.
    """
    if len(images) < k:
        raise ValueError(f"K-Means on pixels needs at least K={k} images, got {len(images)}")
    flat = images.reshape(len(images), -1)
    fit_index = np.arange(len(images))
    if len(images) > fit_limit:
        fit_index = np.sort(np.random.default_rng(seed).choice(len(images), fit_limit, replace=False))
    kmeans = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed)
    kmeans.fit(flat[fit_index].astype(np.float32) / 255.0)
    clusters = np.empty(len(images), dtype=np.int64)
    for start in range(0, len(images), 4096):
        block = flat[start : start + 4096].astype(np.float32) / 255.0
        clusters[start : start + len(block)] = kmeans.predict(block)
    return clusters, len(fit_index)
