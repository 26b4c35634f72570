"""Clustering latent vectors: standardise, reduce (PCA or UMAP), then sklearn's GaussianMixture."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

from .config import MixtureConfig
from .progress import say

GMM_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


class LatentMixture:
    """Standardiser + reducer + GaussianMixture, fitted once on training latents, reused unchanged."""

    def __init__(self, config: MixtureConfig) -> None:
        self.config = config

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, latents: np.ndarray, *, progress: bool = False) -> LatentMixture:
        """Fit on the latents, or on a random subsample of max_fit_samples of them.

        With ``progress``, one line per K tried (under "auto") and the K chosen go to stderr.
        """
        latents = _check_latents(self._subsample(latents))
        self.center_ = latents.mean(axis=0)
        scale = latents.std(axis=0)
        self.scale_ = np.where(scale < 1e-8, 1.0, scale)
        standard = (latents - self.center_) / self.scale_
        self._candidate_ks(_count_distinct(standard))  # fewer distinct points than K: a clear error now
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # PCA of identical points: 0/0 variance ratios
            reduced = self._fit_reducer(standard)
        ks = self._candidate_ks(_count_distinct(reduced))
        fits, self.bic_curve_ = {}, {}
        for k in ks:
            started = time.perf_counter()
            fits[k] = self._fit_gmm(reduced, k)
            self.bic_curve_[k] = float(fits[k].bic(reduced))
            seconds = time.perf_counter() - started
            say(f"  K={k}: BIC {self.bic_curve_[k]:,.1f} ({seconds:.1f} s)", enabled=progress and len(ks) > 1)
        best = min(self.bic_curve_, key=self.bic_curve_.get)
        if len(ks) > 1:
            say(f"chose K={best} by the lowest BIC over K={ks[0]}..{ks[-1]}", enabled=progress)
        self.gmm_ = fits[best]
        return self

    def _subsample(self, latents: np.ndarray) -> np.ndarray:
        limit = self.config.max_fit_samples
        if len(latents) <= limit:
            return latents
        rng = np.random.default_rng(self.config.seed)
        return np.asarray(latents)[np.sort(rng.choice(len(latents), size=limit, replace=False))]

    def _candidate_ks(self, n_distinct: int) -> list[int]:
        cfg = self.config
        if cfg.n_components == "auto":
            lo, hi = cfg.k_range
            ks = [k for k in range(lo, hi + 1) if k <= n_distinct]
            if not ks:
                raise ValueError(
                    f"n_components='auto' tries K in {lo}..{hi}, but the images give only "
                    f"{n_distinct} distinct latent vectors (identical images?); ask for K <= {n_distinct}"
                )
            return ks
        if cfg.n_components > n_distinct:
            raise ValueError(
                f"n_components must be <= the number of distinct latent vectors ({n_distinct}), got "
                f"{cfg.n_components}; identical images give identical vectors: ask for at most {n_distinct}"
            )
        return [int(cfg.n_components)]

    def _fit_gmm(self, x: np.ndarray, k: int) -> GaussianMixture:
        gmm = make_gmm(k, self.config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                return gmm.fit(x)
            except ValueError as exc:
                raise ValueError(
                    f"the Gaussian mixture with K={k} could not be fitted ({exc}); "
                    "try fewer clusters or a larger reg_covar"
                ) from None

    def _fit_reducer(self, standard: np.ndarray) -> np.ndarray:
        cfg = self.config
        dim = min(cfg.reduced_dim, standard.shape[1], len(standard))
        self.reducer_arrays_: dict[str, np.ndarray] = {}
        if cfg.reducer == "pca" and dim < standard.shape[1]:
            pca = PCA(n_components=dim, whiten=True, random_state=cfg.seed).fit(standard)
            self.reducer_arrays_ = {
                "pca_mean": pca.mean_,
                "pca_components": pca.components_,
                "pca_scale": np.sqrt(np.maximum(pca.explained_variance_, 1e-12)),
            }
        elif cfg.reducer == "umap":
            embedding = _umap_embedding(standard, dim, cfg.seed)
            self.reducer_arrays_ = {"umap_inputs": standard.astype(np.float32), "umap_embedding": embedding}
        return self.reduce(standard)

    # -- using ----------------------------------------------------------------------------------

    def reduce(self, standard: np.ndarray) -> np.ndarray:
        """Apply the fitted reducer to standardised latents."""
        arrays = self.reducer_arrays_
        if "pca_components" in arrays:
            centered = standard - arrays["pca_mean"]
            return centered @ arrays["pca_components"].T / arrays["pca_scale"]
        if "umap_embedding" in arrays:
            return knn_place(arrays["umap_inputs"], arrays["umap_embedding"], standard)
        return standard

    def features(self, latents: np.ndarray) -> np.ndarray:
        """The vectors the mixture sees: standardised, then reduced."""
        latents = np.asarray(latents, dtype=np.float64)
        return self.reduce((latents - self.center_) / self.scale_)

    def predict(self, latents: np.ndarray) -> np.ndarray:
        return self.predict_proba(latents).argmax(axis=1)

    def predict_proba(self, latents: np.ndarray) -> np.ndarray:
        return self._batched(self.gmm_.predict_proba, latents)

    def score_samples(self, latents: np.ndarray) -> np.ndarray:
        return self._batched(self.gmm_.score_samples, latents)

    def _batched(self, method, latents: np.ndarray, batch: int = 100_000) -> np.ndarray:
        """Apply a GMM method in batches, so memory does not grow with the number of images."""
        parts = [method(self.features(latents[i : i + batch])) for i in range(0, len(latents), batch)]
        return np.concatenate(parts) if parts else method(self.features(latents))

    # -- saving ---------------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything needed to rebuild the mixture: arrays for safetensors, metadata for JSON."""
        arrays = {"center": self.center_, "scale": self.scale_, **self.reducer_arrays_}
        arrays.update({f"gmm.{name}": getattr(self.gmm_, name) for name in GMM_ARRAYS})
        meta = {
            "config": asdict(self.config),
            "n_components": int(self.gmm_.n_components),
            "bic_curve": {str(k): v for k, v in self.bic_curve_.items()},
            "converged": bool(self.gmm_.converged_),
            "n_iter": int(self.gmm_.n_iter_),
            "lower_bound": float(self.gmm_.lower_bound_),
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict, config: MixtureConfig) -> LatentMixture:
        check_arrays(arrays, int(meta["n_components"]), config.covariance_type)
        mixture = cls(config)
        mixture.center_, mixture.scale_ = arrays["center"], arrays["scale"]
        mixture.reducer_arrays_ = {k: v for k, v in arrays.items() if k.startswith(("pca_", "umap_"))}
        mixture.bic_curve_ = {int(k): float(v) for k, v in meta["bic_curve"].items()}
        mixture.gmm_ = restore_gmm(arrays, meta, config)
        return mixture


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


def make_gmm(k: int, config: MixtureConfig, seed: int | None = None) -> GaussianMixture:
    """An unfitted GaussianMixture with the run's settings (its own seed unless one is given)."""
    return GaussianMixture(
        n_components=k,
        covariance_type=config.covariance_type,
        n_init=config.n_init,
        reg_covar=config.reg_covar,
        max_iter=config.max_iter,
        random_state=config.seed if seed is None else seed,
    )


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


def _count_distinct(x: np.ndarray) -> int:
    """Points that differ after rounding to 6 decimals (the scale of standardised latents)."""
    return len(np.unique(x.round(6), axis=0))


def _check_latents(latents: np.ndarray) -> np.ndarray:
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2 or len(latents) < 2:
        raise ValueError(f"expected at least 2 latent vectors as a 2-D array, got shape {latents.shape}")
    if not np.isfinite(latents).all():
        raise ValueError(
            "latent vectors contain NaN or infinite values: the autoencoder diverged during training; "
            "try a lower learning rate (--lr)"
        )
    return latents


def _umap_embedding(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError:
        raise ValueError("reducer 'umap' needs the umap extra: pip install 'aegmm[umap]'") from None
    reducer = umap.UMAP(
        n_components=dim, n_neighbors=min(20, len(x) - 1), min_dist=0.0, random_state=seed, n_jobs=1
    )
    return reducer.fit_transform(x).astype(np.float32)


def knn_place(inputs: np.ndarray, embedding: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Place points in a fitted embedding: inverse-distance mean of their k nearest fit points.

    A point equal to a fit point lands exactly on that point's embedding, so the training
    images keep their UMAP positions; new images are interpolated the same way before and
    after saving (no pickled UMAP object is needed).
    """
    k = min(k, len(inputs))
    distances, index = NearestNeighbors(n_neighbors=k).fit(inputs).kneighbors(queries)
    weights = 1.0 / np.maximum(distances, 1e-9) ** 2
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkd->nd", weights, embedding[index].astype(np.float64))
