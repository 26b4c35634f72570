"""Likelihood-based evaluation: information criteria, K-Means as a likelihood model, held-out
log-likelihood, and Monte Carlo KL divergence between fitted Gaussian mixtures.

Everything here reuses ``sklearn.mixture.GaussianMixture`` as it is (no EM is re-implemented)
and returns plain Python floats so the numbers can go straight into JSON or an HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_argmin
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

KMEANS_FORMULAS = """K-Means as a likelihood model (a soft spherical mixture with the K-Means parameters)
k(x) = index of the centroid mu_k nearest to x (the K-Means clusters)
N = number of points, D = number of dimensions, K = number of clusters
n_k = number of points assigned to centroid k
mixing weights: pi_k = n_k / N
one shared spherical variance: sigma^2 = (sum over points of ||x - mu_k(x)||^2) / (N * D)
log-likelihood of one point (a density summed over every centroid, as for a GMM):
    log sum over k of pi_k (2 pi sigma^2)^(-D/2) exp(-||x - mu_k||^2 / (2 sigma^2))
LL = sum of the per-point log-likelihoods
parameters: p = K * D (means) + 1 (variance) + (K - 1) (weights)
BIC = -2 LL + p ln N
AIC = -2 LL + 2 p"""


def as_matrix(X, name: str = "X") -> np.ndarray:
    """Return ``X`` as a finite float64 array of shape (N, D) with N >= 1, or raise ValueError."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"expected {name} of shape (n_samples, n_features), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"expected finite values in {name}, got NaN or infinity")
    return X


def _check_features(X: np.ndarray, n_features: int, name: str = "X") -> None:
    if X.shape[1] != n_features:
        raise ValueError(f"expected {name} with {n_features} features, got {X.shape[1]}")


def _information(log_likelihoods: np.ndarray, n_parameters: int) -> dict:
    n = len(log_likelihoods)
    total = float(np.sum(log_likelihoods))
    return {
        "log_likelihood": total,
        "mean_log_likelihood": total / n,
        "bic": -2.0 * total + n_parameters * math.log(n),
        "aic": -2.0 * total + 2.0 * n_parameters,
        "n_parameters": int(n_parameters),
    }


def gmm_n_parameters(gmm: GaussianMixture) -> int:
    """Free parameters of a fitted GaussianMixture: means, covariances and K - 1 weights."""
    k, d = gmm.means_.shape
    covariance = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[gmm.covariance_type]
    return k * d + covariance + k - 1


def gmm_information(gmm: GaussianMixture, X) -> dict:
    """Total and mean log-likelihood, BIC, AIC and parameter count of a fitted mixture on ``X``.

    ``bic`` and ``aic`` equal ``gmm.bic(X)`` and ``gmm.aic(X)``.
    """
    check_is_fitted(gmm)
    X = as_matrix(X)
    _check_features(X, gmm.means_.shape[1])
    return _information(gmm.score_samples(X), gmm_n_parameters(gmm))


class KMeansGaussian(BaseEstimator):
    """K-Means read as a probability model, so its BIC/AIC compare with a Gaussian mixture's.

    K-Means' centroids become the means of a mixture of spherical Gaussians that share one
    variance ``sigma^2 = SSE / (N * D)`` (SSE: sum of squared distances to the nearest centroids),
    with mixing weights ``pi_k = n_k / N`` (n_k: points nearest to centroid k). A point's
    log-likelihood is the mixture density's, ``log sum_k pi_k N(x; mu_k, sigma^2 I)``, as for a
    GaussianMixture, and the model has ``p = K*D + 1 + (K - 1)`` parameters. See
    ``KMEANS_FORMULAS``. (The hard-assignment "classification likelihood", which keeps only the
    nearest centroid's term, is never above this density with the same parameters, so it would
    tilt a comparison towards the GMM.) ``predict`` stays K-Means' nearest centroid.

    Fitting raises ValueError when ``sigma^2 == 0`` (every point lies on its centroid, e.g.
    duplicated points with ``n_clusters`` >= number of distinct points): no finite likelihood
    exists then, and a floor would only produce arbitrarily large numbers.

    Attributes: ``means_`` (K, D), ``weights_`` (K,), ``variance_`` (sigma^2), ``n_features_in_``.
    """

    def __init__(self, *, n_clusters: int = 8, seed: int = 0, n_init: int = 10):
        self.n_clusters = n_clusters
        self.seed = seed
        self.n_init = n_init

    def fit(self, X, y=None) -> KMeansGaussian:
        """Run sklearn's KMeans(n_clusters, n_init, random_state=seed) on ``X``, then the model."""
        X = as_matrix(X)
        if not 1 <= self.n_clusters <= X.shape[0]:
            raise ValueError(
                f"n_clusters must be in [1, number of points ({X.shape[0]})], got {self.n_clusters}"
            )
        kmeans = KMeans(n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.seed)
        return self._fit_centroids(kmeans.fit(X).cluster_centers_, X)

    @classmethod
    def from_kmeans(cls, kmeans: KMeans, X) -> KMeansGaussian:
        """Build the model from an already fitted sklearn KMeans and the points it clustered."""
        check_is_fitted(kmeans)
        centers = kmeans.cluster_centers_
        model = cls(n_clusters=len(centers), seed=kmeans.random_state, n_init=kmeans.n_init)
        X = as_matrix(X)
        _check_features(X, centers.shape[1])
        return model._fit_centroids(centers, X)

    def _fit_centroids(self, centers: np.ndarray, X: np.ndarray) -> KMeansGaussian:
        centers = np.asarray(centers, dtype=np.float64)
        labels = pairwise_distances_argmin(X, centers)
        counts = np.bincount(labels, minlength=len(centers))
        if np.any(counts == 0):
            empty = np.flatnonzero(counts == 0).tolist()
            raise ValueError(
                f"expected every centroid to be nearest to at least one point, got empty cluster(s) {empty}"
            )
        sse = float(np.sum((X - centers[labels]) ** 2))
        if sse <= 0.0:
            raise ValueError(
                f"expected a positive within-cluster variance, got 0: all {X.shape[0]} points lie "
                f"on their {len(centers)} centroids (use fewer clusters)"
            )
        self.means_ = centers
        self.weights_ = counts / X.shape[0]
        self.variance_ = sse / X.size
        self.n_features_in_ = X.shape[1]
        return self

    def _assign(self, X) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self)
        X = as_matrix(X)
        _check_features(X, self.n_features_in_)
        return X, pairwise_distances_argmin(X, self.means_)

    def predict(self, X) -> np.ndarray:
        """Index of the nearest centroid of each point, shape (N,)."""
        return self._assign(X)[1]

    def score_samples(self, X) -> np.ndarray:
        """Log-likelihood of each point under the soft spherical mixture, shape (N,)."""
        X, _ = self._assign(X)
        squared = euclidean_distances(X, self.means_, squared=True)  # (N, K)
        d = X.shape[1]
        log_terms = np.log(self.weights_) - squared / (2.0 * self.variance_)
        return logsumexp(log_terms, axis=1) - 0.5 * d * math.log(2.0 * math.pi * self.variance_)

    def n_parameters(self) -> int:
        """K*D means + 1 shared variance + (K - 1) mixing weights."""
        check_is_fitted(self)
        k, d = self.means_.shape
        return k * d + 1 + (k - 1)

    def information(self, X) -> dict:
        """Same keys as ``gmm_information``: log_likelihood, mean_log_likelihood, bic, aic,
        n_parameters."""
        return _information(self.score_samples(X), self.n_parameters())


def cross_validated_loglik(
    make_model: Callable[[], object], X, n_splits: int = 5, seed: int = 0
) -> list[float]:
    """Mean held-out log-likelihood per point for each fold of a shuffled KFold(seed).

    ``make_model()`` must return a fresh, unfitted estimator with ``fit`` and ``score_samples``
    (a GaussianMixture, a KMeansGaussian, ...). Returns ``n_splits`` floats, higher is better.
    """
    if not callable(make_model):
        raise TypeError(f"expected make_model to be a callable, got {type(make_model).__name__}")
    X = as_matrix(X)
    if not 2 <= n_splits <= X.shape[0]:
        raise ValueError(f"n_splits must be in [2, number of points ({X.shape[0]})], got {n_splits}")
    folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(X)
    scores = []
    for i, (train, test) in enumerate(folds):
        model = make_model().fit(X[train])
        score = float(np.mean(model.score_samples(X[test])))
        if not math.isfinite(score):
            raise ValueError(f"expected a finite held-out log-likelihood in fold {i}, got {score}")
        scores.append(score)
    return scores


def bic_over_seeds(X, make_model: Callable[[int], GaussianMixture], seeds: Iterable[int] = range(10)) -> dict:
    """BIC of a mixture refitted with each seed: ``mean``, ``std`` (ddof=0), ``values``.

    ``make_model(seed)`` returns an unfitted GaussianMixture (the run's one factory).
    """
    X = as_matrix(X)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("expected at least one seed, got none")
    values = [float(make_model(s).fit(X).bic(X)) for s in seeds]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


def information_curve(X, ks: Iterable[int], make_model: Callable[[int], GaussianMixture]) -> dict:
    """BIC and AIC of a mixture fitted with each K in ``ks``; ``make_model(k)`` builds it unfitted."""
    X = as_matrix(X)
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("expected at least one number of components in ks, got none")
    if not all(1 <= k <= X.shape[0] for k in ks):
        raise ValueError(f"every K must be in [1, number of points ({X.shape[0]})], got {ks}")
    curve = {"k": ks, "bic": [], "aic": []}
    for k in ks:
        info = gmm_information(make_model(k).fit(X), X)
        curve["bic"].append(info["bic"])
        curve["aic"].append(info["aic"])
    return curve


def sample_mixture(gmm: GaussianMixture, n_samples: int, seed) -> np.ndarray:
    """Draw ``n_samples`` points from a fitted GaussianMixture with a numpy Generator(seed).

    Unlike ``gmm.sample`` (seeded by ``gmm.random_state``), this is reproducible from ``seed``
    alone. Works for every covariance_type. Points are grouped by component.
    """
    check_is_fitted(gmm)
    rng = np.random.default_rng(seed)
    weights = gmm.weights_ / gmm.weights_.sum()
    counts = rng.multinomial(n_samples, weights)
    d = gmm.means_.shape[1]
    parts = []
    for k, count in enumerate(counts):
        noise = rng.standard_normal((count, d))
        parts.append(gmm.means_[k] + _scale_noise(gmm, k, noise))
    return np.concatenate(parts)


def _scale_noise(gmm: GaussianMixture, k: int, noise: np.ndarray) -> np.ndarray:
    """Turn standard normal noise into noise with the covariance of component ``k``."""
    kind = gmm.covariance_type
    if kind in ("diag", "spherical"):
        return noise * np.sqrt(gmm.covariances_[k])
    covariance = gmm.covariances_ if kind == "tied" else gmm.covariances_[k]
    return noise @ np.linalg.cholesky(covariance).T


def _check_mixtures(mixtures: Mapping[str, GaussianMixture]) -> int:
    dims = set()
    for name, gmm in mixtures.items():
        check_is_fitted(gmm)
        dims.add(gmm.means_.shape[1])
        if len(dims) > 1:
            raise ValueError(
                f"expected mixtures over the same number of features, got {sorted(dims)} (at {name!r})"
            )
    return dims.pop()


def _check_n_samples(n_samples: int) -> None:
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 to estimate a standard error, got {n_samples}")


def _summarise(log_ratios: np.ndarray) -> tuple[float, float]:
    kl = float(np.mean(log_ratios))
    stderr = float(np.std(log_ratios, ddof=1) / math.sqrt(len(log_ratios)))
    return kl, stderr


def mc_kl_divergence(p: GaussianMixture, q: GaussianMixture, n_samples: int = 20000, seed: int = 0) -> dict:
    """Monte Carlo KL(P || Q) = E_P[log p(x) - log q(x)] with x drawn from P.

    Returns ``kl``, ``stderr`` (std of the log ratios / sqrt(n)), ``n_samples`` and
    ``log_ratios`` (the per-sample array, for a histogram). The estimate can be slightly
    negative when P and Q are nearly equal.
    """
    _check_n_samples(n_samples)
    _check_mixtures({"p": p, "q": q})
    x = sample_mixture(p, n_samples, seed)
    log_ratios = p.score_samples(x) - q.score_samples(x)
    kl, stderr = _summarise(log_ratios)
    return {"kl": kl, "stderr": stderr, "n_samples": int(n_samples), "log_ratios": log_ratios}


def kl_matrix(
    mixtures: Mapping[str, GaussianMixture],
    n_samples: int = 20000,
    seed: int = 0,
    on_pair: Callable[[str, str, np.ndarray], None] | None = None,
) -> tuple[list[str], list[list[float]], list[list[float]]]:
    """Pairwise Monte Carlo KL(P || Q): rows P, columns Q, zero diagonal.

    Each row draws its own ``n_samples`` points from P (seeds spawned from ``seed``) and scores
    them under every Q. Returns ``(names, kl, stderr)`` with 2-D lists of floats. ``on_pair(p, q,
    log_ratios)`` sees each pair's per-sample log p(x) - log q(x) (for histograms: no second draw).
    """
    _check_n_samples(n_samples)
    if not mixtures:
        raise ValueError("expected at least one mixture, got an empty mapping")
    _check_mixtures(mixtures)
    names = list(mixtures)
    seeds = np.random.SeedSequence(seed).spawn(len(names))
    kl = [[0.0] * len(names) for _ in names]
    stderr = [[0.0] * len(names) for _ in names]
    for i, p_name in enumerate(names):
        x = sample_mixture(mixtures[p_name], n_samples, seeds[i])
        log_p = mixtures[p_name].score_samples(x)
        for j, q_name in enumerate(names):
            if i != j:
                log_ratios = log_p - mixtures[q_name].score_samples(x)
                kl[i][j], stderr[i][j] = _summarise(log_ratios)
                if on_pair is not None:
                    on_pair(p_name, q_name, log_ratios)
    return names, kl, stderr
