"""Tests of aegmm.evaluation.metrics (and the likelihood functions it re-exports)."""

from __future__ import annotations

import html
import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture

from aegmm.evaluation.metrics import (
    KMEANS_FORMULAS,
    KMeansGaussian,
    bic_over_seeds,
    cluster_accuracy,
    contingency,
    cross_validated_loglik,
    gmm_information,
    information_curve,
    kl_matrix,
    label_agreement,
    mc_kl_divergence,
    purity,
    reconstruction_quality,
    roc_auc,
    sample_mixture,
)

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=150, centers=3, n_features=2, cluster_std=0.5, random_state=0)
    return X, y


def gaussian_kl(m0, s0, m1, s1) -> float:
    """Closed-form KL(N(m0, s0) || N(m1, s1))."""
    inv1 = np.linalg.inv(s1)
    diff = m1 - m0
    d = len(m0)
    logdet = np.linalg.slogdet(s1)[1] - np.linalg.slogdet(s0)[1]
    return 0.5 * (np.trace(inv1 @ s0) + diff @ inv1 @ diff - d + logdet)


def full_covariance(gmm: GaussianMixture) -> np.ndarray:
    """Covariance matrix of the single component of a one-component mixture."""
    d = gmm.means_.shape[1]
    cov = gmm.covariances_
    return {
        "full": lambda: cov[0],
        "tied": lambda: cov,
        "diag": lambda: np.diag(cov[0]),
        "spherical": lambda: cov[0] * np.eye(d),
    }[gmm.covariance_type]()


# ---- agreement with labels -------------------------------------------------------------------


def test_accuracy_of_permuted_labelling_is_one():
    y_true = [0, 0, 1, 1, 2, 2]
    assert cluster_accuracy(y_true, [2, 2, 0, 0, 1, 1]) == 1.0
    assert cluster_accuracy(["cat", "cat", "dog"], [7, 7, 3]) == 1.0


def test_accuracy_and_purity_with_more_clusters_than_labels():
    # clusters: 0 -> labels (0, 0), 1 -> (0, 1), 2 -> (1, 1)
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [0, 0, 1, 1, 2, 2]
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(4 / 6)  # cluster 1 unmatched
    assert purity(y_true, y_pred) == pytest.approx((2 + 1 + 2) / 6)


def test_accuracy_and_purity_with_fewer_clusters_than_labels():
    y_true = ["a", "b", "c", "c"]
    y_pred = [5, 5, 5, 5]
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(2 / 4)
    assert purity(y_true, y_pred) == pytest.approx(2 / 4)


def test_purity_hand_case():
    # cluster 0: a, a, b ; cluster 1: b, b, b, c
    y_true = ["a", "a", "b", "b", "b", "b", "c"]
    y_pred = [0, 0, 0, 1, 1, 1, 1]
    assert purity(y_true, y_pred) == pytest.approx((2 + 3) / 7)


def test_contingency_rows_are_clusters():
    table, clusters, labels = contingency(["x", "x", "y", "y", "y"], [1, 0, 0, 0, 1])
    assert clusters == [0, 1]
    assert labels == ["x", "y"]
    np.testing.assert_array_equal(table, [[1, 2], [1, 1]])


def test_label_agreement_keys_and_perfect_score():
    scores = label_agreement([0, 0, 1, 1, 2], [1, 1, 2, 2, 0])
    assert set(scores) == {"acc", "nmi", "ari", "purity"}
    for value in scores.values():
        assert type(value) is float
        assert value == pytest.approx(1.0)


def test_label_errors():
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        cluster_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="expected 1-D"):
        purity([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="at least one labelled point"):
        label_agreement([], [])


# ---- information criteria ------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gmm_information_matches_sklearn(blobs, covariance_type):
    X, _ = blobs
    gmm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    info = gmm_information(gmm, X)
    assert info["bic"] == pytest.approx(gmm.bic(X), rel=1e-10)
    assert info["aic"] == pytest.approx(gmm.aic(X), rel=1e-10)
    assert info["mean_log_likelihood"] == pytest.approx(gmm.score(X), rel=1e-10)
    assert info["log_likelihood"] == pytest.approx(gmm.score(X) * len(X), rel=1e-10)
    assert type(info["n_parameters"]) is int


def test_gmm_information_errors(blobs):
    X, _ = blobs
    with pytest.raises(NotFittedError):
        gmm_information(GaussianMixture(2), X)
    gmm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="expected X with 2 features, got 3"):
        gmm_information(gmm, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"expected X of shape \(n_samples, n_features\)"):
        gmm_information(gmm, np.zeros(4))


def _spherical_mixture_loglik(X, means, weights, variance) -> np.ndarray:
    """log sum_k pi_k N(x; mu_k, variance I), computed with scipy's densities."""
    densities = [
        w * multivariate_normal(m, variance * np.eye(X.shape[1])).pdf(X) for m, w in zip(means, weights)
    ]
    return np.log(np.sum(np.atleast_2d(densities), axis=0)).reshape(len(X))


def test_kmeans_likelihood_1d_by_hand():
    # centroids 1 and 11; squared distances 1, 1 | 1, 0, 1 -> SSE = 4, N = 5, D = 1
    X = np.array([[0.0], [2.0], [10.0], [11.0], [12.0]])
    model = KMeansGaussian(n_clusters=2, seed=0, n_init=5).fit(X)
    order = np.argsort(model.means_.ravel())
    assert model.means_.ravel()[order].tolist() == pytest.approx([1.0, 11.0])
    assert model.weights_[order].tolist() == pytest.approx([0.4, 0.6])
    assert model.variance_ == pytest.approx(0.8)
    ll = _spherical_mixture_loglik(X, [[1.0], [11.0]], [0.4, 0.6], 0.8).sum()
    p = 2 * 1 + 1 + 1
    info = model.information(X)
    assert info["n_parameters"] == 4
    assert info["log_likelihood"] == pytest.approx(ll)
    assert info["mean_log_likelihood"] == pytest.approx(ll / 5)
    assert info["bic"] == pytest.approx(-2 * ll + p * math.log(5))
    assert info["aic"] == pytest.approx(-2 * ll + 2 * p)


def test_kmeans_likelihood_2d_by_hand_from_kmeans():
    # centroids (1, 0) and (1, 2): close enough that both components matter for every point
    X = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    kmeans = KMeans(n_clusters=2, init=np.array([[1.0, 0.0], [1.0, 2.0]]), n_init=1).fit(X)
    model = KMeansGaussian.from_kmeans(kmeans, X)
    sigma2 = 4 / (4 * 2)  # every squared distance to the nearest centroid is 1: SSE 4, N 4, D 2
    expected = _spherical_mixture_loglik(X, [[1.0, 0.0], [1.0, 2.0]], [0.5, 0.5], sigma2)
    np.testing.assert_allclose(model.score_samples(X), expected)
    nearest_only = math.log(0.5) - math.log(2 * math.pi * sigma2) - 1 / (2 * sigma2)
    assert np.all(model.score_samples(X) > nearest_only + 1e-3)  # the density counts both centroids
    p = 2 * 2 + 1 + 1
    assert model.information(X)["bic"] == pytest.approx(-2 * expected.sum() + p * math.log(4))
    np.testing.assert_array_equal(model.predict(X), kmeans.predict(X))


def test_kmeans_and_a_spherical_gmm_score_alike_on_equal_spherical_clusters():
    rng = np.random.default_rng(5)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    X = np.concatenate([c + rng.normal(size=(300, 2)) for c in centers])
    kmeans = KMeansGaussian(n_clusters=3, n_init=3).fit(X).information(X)["mean_log_likelihood"]
    gmm = GaussianMixture(3, covariance_type="tied", random_state=0).fit(X).score(X)
    assert kmeans == pytest.approx(gmm, abs=0.02)  # the same model: neither is tilted


def test_kmeans_gaussian_errors():
    X = np.array([[0.0], [0.0], [5.0], [5.0]])
    with pytest.raises(ValueError, match="positive within-cluster variance, got 0"):
        KMeansGaussian(n_clusters=2, n_init=1).fit(X)
    with pytest.raises(ValueError, match=r"n_clusters must be in \[1, number of points \(4\)\]"):
        KMeansGaussian(n_clusters=5).fit(X)
    with pytest.raises(NotFittedError):
        KMeansGaussian().score_samples(X)
    kmeans = KMeans(n_clusters=2, n_init=1, random_state=0).fit(np.array([[0.0], [1.0], [9.0]]))
    with pytest.raises(ValueError, match=r"empty cluster\(s\) \[1\]"):
        KMeansGaussian.from_kmeans(kmeans, np.array([[0.0], [0.5], [1.0]]))


def test_kmeans_formulas_are_html_safe():
    assert html.escape(KMEANS_FORMULAS) == KMEANS_FORMULAS


def test_cross_validated_loglik_prefers_the_right_k(blobs):
    X, _ = blobs
    right = cross_validated_loglik(lambda: GaussianMixture(3, random_state=0), X, seed=0)
    wrong = cross_validated_loglik(lambda: GaussianMixture(1, random_state=0), X, seed=0)
    assert len(right) == 5 and all(type(v) is float and math.isfinite(v) for v in right)
    assert np.mean(right) > np.mean(wrong) + 1.0
    kmeans = cross_validated_loglik(lambda: KMeansGaussian(n_clusters=3, n_init=2), X, n_splits=3)
    assert len(kmeans) == 3 and all(math.isfinite(v) for v in kmeans)
    with pytest.raises(ValueError, match="n_splits must be in"):
        cross_validated_loglik(lambda: GaussianMixture(1), X, n_splits=1)
    with pytest.raises(TypeError, match="expected make_model to be a callable"):
        cross_validated_loglik(GaussianMixture(1), X)


def _by_hand_bic(gmm: GaussianMixture, X: np.ndarray) -> float:
    """-2 LL + p ln N with p counted by hand for a full-covariance mixture."""
    k, d = gmm.means_.shape
    p = k * d + k * d * (d + 1) // 2 + (k - 1)
    return -2 * gmm.score_samples(X).sum() + p * math.log(len(X))


def test_bic_over_seeds_and_information_curve_use_the_factory_they_are_given(blobs):
    X, _ = blobs
    seeds = []

    def make(seed):
        seeds.append(seed)
        return GaussianMixture(3, random_state=seed, max_iter=7)

    result = bic_over_seeds(X, make, seeds=[4, 5, 6])
    assert seeds == [4, 5, 6]
    direct = [_by_hand_bic(GaussianMixture(3, random_state=s, max_iter=7).fit(X), X) for s in (4, 5, 6)]
    assert result["values"] == pytest.approx(direct)
    assert (result["mean"], result["std"]) == pytest.approx((np.mean(direct), np.std(direct)))
    curve = information_curve(X, [1, 2, 3, 4], lambda k: GaussianMixture(k, random_state=0))
    assert curve["k"] == [1, 2, 3, 4]
    for k, bic in zip(curve["k"], curve["bic"]):
        assert bic == pytest.approx(_by_hand_bic(GaussianMixture(k, random_state=0).fit(X), X))
    assert curve["bic"][2] < curve["bic"][0]  # three blobs: K=3 explains them far better than K=1
    with pytest.raises(ValueError, match=r"every K must be in \[1, number of points \(150\)\], got \[0\]"):
        information_curve(X, [0], lambda k: GaussianMixture(k))
    with pytest.raises(ValueError, match="expected at least one seed"):
        bic_over_seeds(X, lambda s: GaussianMixture(3), seeds=[])


# ---- KL divergence -------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_mc_kl_matches_closed_form_for_single_gaussians(covariance_type):
    rng = np.random.default_rng(0)
    a = rng.multivariate_normal([0.0, 0.0], [[3.0, 1.2], [1.2, 0.8]], size=300)
    b = rng.multivariate_normal([1.0, -0.5], [[0.5, -0.2], [-0.2, 1.5]], size=300)
    p = GaussianMixture(1, covariance_type=covariance_type).fit(a)
    q = GaussianMixture(1, covariance_type=covariance_type).fit(b)
    exact = gaussian_kl(p.means_[0], full_covariance(p), q.means_[0], full_covariance(q))
    result = mc_kl_divergence(p, q, n_samples=20000, seed=0)
    assert result["n_samples"] == 20000 and result["log_ratios"].shape == (20000,)
    assert 0 < result["stderr"] < 0.1 * exact
    assert abs(result["kl"] - exact) < 4 * result["stderr"]


def test_mc_kl_one_dimensional_closed_form():
    rng = np.random.default_rng(1)
    p = GaussianMixture(1).fit(rng.normal(0.0, 1.0, size=(200, 1)))
    q = GaussianMixture(1).fit(rng.normal(2.0, 0.5, size=(200, 1)))
    m0, v0 = p.means_[0, 0], p.covariances_[0, 0, 0]
    m1, v1 = q.means_[0, 0], q.covariances_[0, 0, 0]
    exact = 0.5 * (v0 / v1 + (m1 - m0) ** 2 / v1 - 1 + math.log(v1 / v0))
    result = mc_kl_divergence(p, q, n_samples=20000, seed=3)
    assert abs(result["kl"] - exact) < 4 * result["stderr"]


def test_sampling_is_seeded_and_follows_the_mixture(blobs):
    X, _ = blobs
    gmm = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_array_equal(sample_mixture(gmm, 50, 7), sample_mixture(gmm, 50, 7))
    assert not np.array_equal(sample_mixture(gmm, 50, 7), sample_mixture(gmm, 50, 8))
    draws = sample_mixture(gmm, 6000, 0)
    np.testing.assert_allclose(draws.mean(axis=0), gmm.weights_ @ gmm.means_, atol=0.1)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_samples_have_the_fitted_covariance(covariance_type):
    rng = np.random.default_rng(4)
    data = rng.multivariate_normal([1.0, -2.0], [[4.0, 1.5], [1.5, 1.0]], size=400)
    gmm = GaussianMixture(1, covariance_type=covariance_type).fit(data)
    draws = sample_mixture(gmm, 20000, 0)
    np.testing.assert_allclose(draws.mean(axis=0), gmm.means_[0], atol=0.05)
    np.testing.assert_allclose(np.cov(draws.T), full_covariance(gmm), atol=0.1)


def test_kl_matrix_layout():
    rng = np.random.default_rng(2)
    mixtures = {
        name: GaussianMixture(1).fit(rng.normal(shift, 1.0, size=(100, 2)))
        for name, shift in (("near", 0.0), ("mid", 0.5), ("far", 3.0))
    }
    names, kl, stderr = kl_matrix(mixtures, n_samples=2000, seed=0)
    assert names == ["near", "mid", "far"]
    assert all(type(v) is float for row in kl + stderr for v in row)
    assert 0 < kl[0][1] < kl[0][2]
    assert kl[1][2] < kl[0][2]
    single = mc_kl_divergence(mixtures["near"], mixtures["far"], n_samples=2000, seed=0)
    assert kl[0][2] == pytest.approx(single["kl"], abs=5 * single["stderr"])
    with pytest.raises(ValueError, match="same number of features"):
        kl_matrix({"a": mixtures["near"], "b": GaussianMixture(1).fit(rng.normal(size=(20, 3)))})
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        mc_kl_divergence(mixtures["near"], mixtures["far"], n_samples=1)


def test_kl_matrix_hands_each_pairs_log_ratios_out_of_the_same_draw():
    rng = np.random.default_rng(3)
    mixtures = {
        name: GaussianMixture(1).fit(rng.normal(shift, 1.0, size=(80, 2)))
        for name, shift in (("a", 0), ("b", 2))
    }
    seen = {}
    names, kl, _ = kl_matrix(
        mixtures, n_samples=500, seed=1, on_pair=lambda p, q, r: seen.update({(p, q): r})
    )
    assert list(seen) == [("a", "b"), ("b", "a")]
    assert kl[0][1] == float(np.mean(seen[("a", "b")])) and kl[1][0] == float(np.mean(seen[("b", "a")]))


# ---- ROC AUC and reconstruction --------------------------------------------------------------


def test_roc_auc_hand_case_and_errors():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered correctly
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both positive and negative examples, got only"):
        roc_auc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="booleans or 0/1"):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="same length"):
        roc_auc([0.1, 0.2, 0.3], [0, 1])


def test_reconstruction_quality_hand_case():
    originals = np.zeros((2, 3, 3))
    result = reconstruction_quality(originals, np.full((2, 3, 3), 0.1))
    assert result["mse"] == pytest.approx(0.01)
    assert result["psnr"] == pytest.approx(20.0)
    half = np.zeros((2, 2))
    half[0] = 0.5  # two of four pixels off by 0.5 -> mse = 0.125
    assert reconstruction_quality(np.zeros((2, 2)), half)["mse"] == pytest.approx(0.125)
    assert reconstruction_quality(originals, originals) == {"mse": 0.0, "psnr": 100.0}


def test_reconstruction_quality_errors():
    with pytest.raises(ValueError, match=r"same shape, got \(2, 2\) and \(2, 3\)"):
        reconstruction_quality(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expected reconstructions in \[0, 1\]"):
        reconstruction_quality(np.zeros((2, 2)), np.full((2, 2), 1.5))
