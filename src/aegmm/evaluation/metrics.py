"""Evaluation metrics: agreement of clusters with known labels, ROC AUC, reconstruction quality.

The likelihood-based metrics live in ``likelihood.py`` and are re-exported here, so a report can
import every number it needs from ``aegmm.evaluation.metrics``. All numbers are plain Python
floats.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, roc_auc_score
from sklearn.metrics.cluster import contingency_matrix

from aegmm.evaluation.likelihood import (
    KMEANS_FORMULAS,
    KMeansGaussian,
    bic_over_seeds,
    cross_validated_loglik,
    gmm_information,
    information_curve,
    kl_matrix,
    mc_kl_divergence,
    sample_mixture,
)

__all__ = [
    "KMEANS_FORMULAS",
    "MAX_PSNR",
    "KMeansGaussian",
    "bic_over_seeds",
    "cluster_accuracy",
    "contingency",
    "cross_validated_loglik",
    "gmm_information",
    "information_curve",
    "kl_matrix",
    "label_agreement",
    "mc_kl_divergence",
    "purity",
    "reconstruction_quality",
    "roc_auc",
    "sample_mixture",
]

MAX_PSNR = 100.0  # dB; reported for a perfect reconstruction (mse == 0) and used as a cap


def _check_labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(f"expected 1-D y_true and y_pred, got shapes {y_true.shape} and {y_pred.shape}")
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"expected y_true and y_pred of the same length, got {len(y_true)} and {len(y_pred)}"
        )
    if len(y_true) == 0:
        raise ValueError("expected at least one labelled point, got none")
    return y_true, y_pred


def contingency(y_true, y_pred) -> tuple[np.ndarray, list, list]:
    """Counts of points per (cluster, label): ``(table, cluster_ids, label_ids)``.

    ``table[i, j]`` is the number of points in cluster ``cluster_ids[i]`` with label
    ``label_ids[j]`` (rows clusters, columns labels, ids sorted). ``table`` is an int array.
    """
    y_true, y_pred = _check_labels(y_true, y_pred)
    table = contingency_matrix(y_pred, y_true)
    return np.asarray(table), np.unique(y_pred).tolist(), np.unique(y_true).tolist()


def cluster_accuracy(y_true, y_pred) -> float:
    """Accuracy under the best one-to-one matching of clusters to labels (Hungarian method).

    With more clusters than labels the unmatched clusters count as wrong; with fewer, the
    unmatched labels do. Labels and cluster ids may be ints or strings.
    """
    table, _, _ = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def purity(y_true, y_pred) -> float:
    """Share of points whose label is the most common label of their cluster."""
    table, _, _ = contingency(y_true, y_pred)
    return float(table.max(axis=1).sum() / table.sum())


def label_agreement(y_true, y_pred) -> dict:
    """``acc`` (Hungarian), ``nmi``, ``ari`` and ``purity`` of clusters against labels."""
    y_true, y_pred = _check_labels(y_true, y_pred)
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "purity": purity(y_true, y_pred),
    }


def roc_auc(scores, is_positive) -> float:
    """Area under the ROC curve of ``scores`` for the boolean (or 0/1) target ``is_positive``."""
    scores, is_positive = np.asarray(scores, dtype=np.float64), np.asarray(is_positive)
    if scores.ndim != 1 or scores.shape != is_positive.shape:
        raise ValueError(
            f"expected 1-D scores and is_positive of the same length, got shapes {scores.shape} "
            f"and {is_positive.shape}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("expected finite scores, got NaN or infinity")
    values = set(np.unique(is_positive).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"expected is_positive to hold booleans or 0/1, got values {values}")
    if len(values) < 2:
        raise ValueError(f"expected both positive and negative examples, got only is_positive={values.pop()}")
    return float(roc_auc_score(is_positive.astype(bool), scores))


def reconstruction_quality(originals, reconstructions) -> dict:
    """Mean squared error over all pixels and PSNR = 10 log10(1 / mse) in dB.

    Both arrays hold floats in [0, 1] with the same shape. PSNR is capped at ``MAX_PSNR``
    (100 dB), which is also what a perfect reconstruction (mse == 0) reports.
    """
    originals = np.asarray(originals, dtype=np.float64)
    reconstructions = np.asarray(reconstructions, dtype=np.float64)
    if originals.shape != reconstructions.shape or originals.size == 0:
        raise ValueError(
            f"expected non-empty originals and reconstructions of the same shape, got "
            f"{originals.shape} and {reconstructions.shape}"
        )
    for name, array in (("originals", originals), ("reconstructions", reconstructions)):
        if not np.all((array >= 0.0) & (array <= 1.0)):
            raise ValueError(
                f"expected {name} in [0, 1], got values in [{np.nanmin(array)}, {np.nanmax(array)}]"
            )
    mse = float(np.mean((originals - reconstructions) ** 2))
    psnr = MAX_PSNR if mse == 0.0 else min(MAX_PSNR, 10.0 * math.log10(1.0 / mse))
    return {"mse": mse, "psnr": psnr}
