"""A fitted LatentMixture as arrays (for safetensors) and back: the scaler, the reducer and the
GaussianMixture's parameters, checked on the way in so a tampered file is refused."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from .config import MixtureConfig
from .embedding import UMAPPlacement

GMM_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def restore_scaler(center: np.ndarray, scale: np.ndarray) -> StandardScaler:
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = center, scale, scale**2
    scaler.n_features_in_ = len(center)
    return scaler


def reducer_arrays(reducer) -> dict[str, np.ndarray]:
    if isinstance(reducer, PCA):
        scale = np.sqrt(reducer.explained_variance_)
        return {"pca_mean": reducer.mean_, "pca_components": reducer.components_, "pca_scale": scale}
    if isinstance(reducer, UMAPPlacement):
        return {"umap_inputs": reducer.inputs_, "umap_embedding": reducer.embedding_}
    return {}


def restore_reducer(arrays: dict[str, np.ndarray], config: MixtureConfig):
    if "pca_components" in arrays:
        pca = PCA(n_components=len(arrays["pca_components"]), whiten=True, random_state=config.seed)
        pca.mean_, pca.components_ = arrays["pca_mean"], arrays["pca_components"]
        pca.explained_variance_ = np.asarray(arrays["pca_scale"], dtype=np.float64) ** 2
        pca.n_components_, pca.n_features_in_ = len(pca.components_), pca.components_.shape[1]
        return pca
    if "umap_embedding" in arrays:
        placement = UMAPPlacement(n_components=arrays["umap_embedding"].shape[1], random_state=config.seed)
        placement.inputs_, placement.embedding_ = arrays["umap_inputs"], arrays["umap_embedding"]
        return placement
    return "passthrough"


def check_arrays(arrays: dict[str, np.ndarray], k: int, covariance_type: str) -> None:
    """Saved arrays must fit together (shapes) and be finite floats: a tampered file is refused."""
    d = _dims(arrays, "center", 1)[0]
    if "pca_components" in arrays:
        f = _dims(arrays, "pca_components", 2)[0]
        reducer = {"pca_mean": (d,), "pca_components": (f, d), "pca_scale": (f,)}
    elif "umap_embedding" in arrays:
        n, f = _dims(arrays, "umap_embedding", 2)
        reducer = {"umap_inputs": (n, d), "umap_embedding": (n, f)}
    else:
        f, reducer = d, {}
    cov = {"full": (k, f, f), "tied": (f, f), "diag": (k, f), "spherical": (k,)}[covariance_type]
    expected = {"center": (d,), "scale": (d,), **reducer, "gmm.weights_": (k,), "gmm.means_": (k, f)}
    expected |= {"gmm.covariances_": cov, "gmm.precisions_cholesky_": cov}
    for name, shape in expected.items():
        value = np.asarray(arrays[name])
        if value.shape != shape or value.dtype.kind != "f":
            raise ValueError(
                f"array {name!r} must be float with shape {shape}, got {value.dtype} {value.shape}"
            )
        if not np.isfinite(value).all():
            raise ValueError(f"array {name!r} holds NaN or infinite values")


def _dims(arrays: dict[str, np.ndarray], name: str, ndim: int) -> tuple[int, ...]:
    shape = np.shape(arrays[name])
    if len(shape) != ndim:
        raise ValueError(f"array {name!r} must have {ndim} dimension(s), got shape {shape}")
    return shape


def restore_gmm(arrays: dict[str, np.ndarray], meta: dict, config: MixtureConfig) -> GaussianMixture:
    """A fitted GaussianMixture rebuilt from its saved parameters (sklearn's public attributes)."""
    gmm = GaussianMixture(
        n_components=int(meta["n_components"]),
        covariance_type=config.covariance_type,
        reg_covar=config.reg_covar,
        random_state=config.seed,
    )
    for name in GMM_ARRAYS:
        setattr(gmm, name, np.asarray(arrays[f"gmm.{name}"], dtype=np.float64))
    gmm.precisions_ = _precisions(gmm.precisions_cholesky_, config.covariance_type)
    gmm.converged_, gmm.n_iter_ = bool(meta["converged"]), int(meta["n_iter"])
    gmm.lower_bound_ = float(meta["lower_bound"])
    gmm.n_features_in_ = gmm.means_.shape[1]
    return gmm


def _precisions(chol: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return np.einsum("kij,klj->kil", chol, chol)
    if covariance_type == "tied":
        return chol @ chol.T
    return chol**2
