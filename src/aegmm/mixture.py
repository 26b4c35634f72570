"""Clustering latent vectors: Pipeline((L2,) StandardScaler, PCA or UMAP, GaussianMixture)."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from .candidates import Candidate, agreement, evenness, fit_side_by_side
from .config import MixtureConfig
from .embedding import UMAPPlacement
from .progress import say

GMM_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
BATCH = 100_000  # latents scored at once: memory does not grow with the number of images
PCA_MIN_VARIANCE = 1e-12  # whitening divides by at least sqrt(1e-12): rank-deficient latents stay finite


class LatentMixture:
    """scikit-learn's Pipeline(normalizer, StandardScaler, reducer, GaussianMixture) on training latents.

    The normalizer is sklearn's Normalizer (normalize="l2": each vector to unit length) or nothing.

    The reducer is PCA(whiten=True), ``UMAPPlacement`` or nothing ("passthrough"). Each candidate
    (``config.candidates``, one seed each) fits its own reducer; the K to fit (or each K tried
    under "auto") reuses that reducer and the lowest BIC wins; then one candidate is kept by
    ``config.candidate_rule``: the one the others agree with most, or the one with the most equal
    cluster sizes. The fitted pipeline is ``pipeline_``; it is saved and rebuilt from arrays,
    never pickled.
    """

    def __init__(self, config: MixtureConfig) -> None:
        self.config = config.resolve()  # settings left "auto" with no kind of image: pca's

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, latents: np.ndarray, *, progress: bool = False, n_jobs: int = 1) -> LatentMixture:
        """Fit on the latents, or on a random subsample of max_fit_samples of them.

        Each candidate (``config.candidates`` of them, seeds seed, seed+1, ...) fits its own reducer
        and mixture; with more than one, the rule ``config.candidate_rule`` keeps one: "agreement",
        the candidate whose clusters agree most with the others' (mean adjusted Rand index of their
        training labels, ``agreement_``), the partition the seeds reproduce; or "balance", the one
        whose training clusters are the most equal in size (``evenness_``). With ``progress``, one
        line per K tried (under "auto") and per candidate, and the choices, go to stderr.
        """
        latents = _check_latents(self._subsample(latents))
        normalizer = _normalizer(self.config, latents.shape[1])
        if normalizer != "passthrough":
            latents = normalizer.transform(latents)
        scaler = _fit_scaler(latents)
        standard = scaler.transform(latents)
        self._candidate_ks(_count_distinct(standard))  # fewer distinct points than K: a clear error now
        seeds = range(self.config.seed, self.config.seed + self.config.candidates)
        fitted = dict(zip(seeds, fit_side_by_side(self._fit_candidate, standard, seeds, n_jobs), strict=True))
        for candidate in fitted.values():
            candidate.say_bic(progress)
        self.agreement_ = agreement({seed: candidate.labels for seed, candidate in fitted.items()})
        self.evenness_ = {}  # like agreement_: empty for one candidate
        if len(fitted) > 1:
            self.evenness_ = {seed: evenness(c.labels, c.gmm.n_components) for seed, c in fitted.items()}
        for seed, value in self.agreement_.items():
            say(
                f"  candidate seed {seed}: mean ARI with the others {value:.3f}, "
                f"cluster sizes' evenness {self.evenness_[seed]:.3f}",
                enabled=progress,
            )
        scores, why = {
            "agreement": (self.agreement_, "the most agreement"),
            "balance": (self.evenness_, "the most equal cluster sizes"),
        }[self.config.candidate_rule]
        chosen = max(fitted, key=lambda seed: scores.get(seed, 0.0))  # one candidate: itself
        say(f"kept candidate seed {chosen} ({why})", enabled=progress and len(fitted) > 1)
        reducer, gmm, self.bic_curve_ = fitted[chosen][:3]
        if isinstance(reducer, UMAPPlacement):
            reducer.inputs_ = np.asarray(standard, dtype=np.float32)  # the points every candidate placed
        self.pipeline_ = _pipeline(normalizer, scaler, reducer, gmm)
        return self

    def _fit_candidate(self, standard: np.ndarray, seed: int) -> Candidate:
        """This seed's reducer and its lowest-BIC mixture."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # PCA of identical points: 0/0 variance ratios
            reducer = self._fit_reducer(standard, seed)
        reduced = _reduced(reducer, standard)
        ks = self._candidate_ks(_count_distinct(reduced))
        fits, bic_curve, seconds = {}, {}, {}
        for k in ks:
            started = time.perf_counter()
            fits[k] = self._fit_gmm(reduced, k, seed)
            bic_curve[k] = float(fits[k].bic(reduced))
            seconds[k] = time.perf_counter() - started
        best = min(bic_curve, key=bic_curve.get)
        if isinstance(reducer, UMAPPlacement):  # its copy of `standard` goes: fit() gives the kept
            reducer.inputs_ = None  # candidate the one array, and no worker sends a copy back
        return Candidate(reducer, fits[best], bic_curve, fits[best].predict(reduced), seconds)

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

    def _fit_gmm(self, x: np.ndarray, k: int, seed: int) -> GaussianMixture:
        gmm = make_gmm(k, self.config, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                return gmm.fit(x)
            except ValueError as exc:
                raise ValueError(
                    f"the Gaussian mixture with K={k} could not be fitted ({exc}); "
                    "try fewer clusters or a larger reg_covar"
                ) from None

    def _fit_reducer(self, standard: np.ndarray, seed: int):
        cfg = self.config
        dim = min(cfg.reduced_dim, standard.shape[1], len(standard))
        if cfg.reducer == "pca" and dim < standard.shape[1]:
            pca = PCA(n_components=dim, whiten=True, random_state=seed).fit(standard)
            pca.explained_variance_ = np.maximum(pca.explained_variance_, PCA_MIN_VARIANCE)
            return pca
        if cfg.reducer == "umap":
            return UMAPPlacement(n_components=dim, random_state=seed).fit(standard)
        return "passthrough"

    # -- using ----------------------------------------------------------------------------------

    @property
    def gmm_(self) -> GaussianMixture:
        return self.pipeline_[-1]

    @property
    def center_(self) -> np.ndarray:
        return self.pipeline_.named_steps["scale"].mean_

    @property
    def scale_(self) -> np.ndarray:
        return self.pipeline_.named_steps["scale"].scale_

    def features(self, latents: np.ndarray) -> np.ndarray:
        """The vectors the mixture sees: standardised, then reduced."""
        return self.pipeline_[:-1].transform(np.asarray(latents, dtype=np.float64))

    def predict(self, latents: np.ndarray) -> np.ndarray:
        return self.predict_proba(latents).argmax(axis=1)

    def predict_proba(self, latents: np.ndarray) -> np.ndarray:
        """Membership probabilities (N, K). Under UMAP, a new point's are the mean of its nearest
        training points' (the weights that place it): a point placed between two clusters' points
        still joins the one most of its neighbours are in."""
        return self._batched(latents, proba=True)[0]

    def score_samples(self, latents: np.ndarray) -> np.ndarray:
        return self._batched(latents, log_likelihood=True)[0]

    def score(self, latents: np.ndarray, *, with_features: bool = False) -> tuple[np.ndarray, ...]:
        """(membership probabilities (N, K), log-likelihoods (N,)) from one pass of the features;
        with ``with_features``, (features, probabilities, log-likelihoods)."""
        return self._batched(latents, features=with_features, proba=True, log_likelihood=True)

    def _batched(self, latents: np.ndarray, *, features=False, proba=False, log_likelihood=False):
        """The features, probabilities and/or log-likelihoods of each batch (features computed once
        for all of them), so memory does not grow with the number of images."""
        batches = [latents[i : i + BATCH] for i in range(0, len(latents), BATCH)] or [latents]
        reducer = self.pipeline_.named_steps["reduce"]
        parts = []
        for batch in batches:
            if isinstance(reducer, UMAPPlacement):
                x, votes = reducer.place(self.pipeline_[:-2].transform(np.asarray(batch, dtype=np.float64)))
            else:
                x, votes = self.features(batch), None
            part = [x] if features else []
            if proba:
                part.append(self.gmm_.predict_proba(x) if votes is None else votes @ self._training_proba())
            if log_likelihood:
                part.append(self.gmm_.score_samples(x))
            parts.append(part)
        return tuple(np.concatenate([part[j] for part in parts]) for j in range(len(parts[0])))

    def _training_proba(self) -> np.ndarray:
        """The mixture's probabilities of the UMAP training points (computed once, not saved)."""
        if getattr(self, "training_proba_", None) is None:
            self.training_proba_ = self.gmm_.predict_proba(self.pipeline_.named_steps["reduce"].embedding_)
        return self.training_proba_

    # -- saving ---------------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything needed to rebuild the mixture: arrays for safetensors, metadata for JSON."""
        arrays = {"center": self.center_, "scale": self.scale_}
        arrays |= _reducer_arrays(self.pipeline_.named_steps["reduce"])
        arrays.update({f"gmm.{name}": getattr(self.gmm_, name) for name in GMM_ARRAYS})
        meta = {
            "config": asdict(self.config),
            "n_components": int(self.gmm_.n_components),
            "bic_curve": {str(k): v for k, v in self.bic_curve_.items()},
            "agreement": {str(seed): v for seed, v in self.agreement_.items()},
            "evenness": {str(seed): v for seed, v in self.evenness_.items()},
            "converged": bool(self.gmm_.converged_),
            "n_iter": int(self.gmm_.n_iter_),
            "lower_bound": float(self.gmm_.lower_bound_),
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict, config: MixtureConfig) -> LatentMixture:
        check_arrays(arrays, int(meta["n_components"]), config.covariance_type)
        mixture = cls(config)
        mixture.bic_curve_ = {int(k): float(v) for k, v in meta["bic_curve"].items()}
        mixture.agreement_ = {int(seed): float(v) for seed, v in meta.get("agreement", {}).items()}
        mixture.evenness_ = {int(seed): float(v) for seed, v in meta.get("evenness", {}).items()}
        normalizer = _normalizer(config, len(arrays["center"]))
        scaler = _restore_scaler(arrays["center"], arrays["scale"])
        reducer, gmm = _restore_reducer(arrays, config), restore_gmm(arrays, meta, config)
        mixture.pipeline_ = _pipeline(normalizer, scaler, reducer, gmm)
        return mixture


def _pipeline(normalizer, scaler: StandardScaler, reducer, gmm: GaussianMixture) -> Pipeline:
    return Pipeline([("normalize", normalizer), ("scale", scaler), ("reduce", reducer), ("gmm", gmm)])


def _reduced(reducer, standard: np.ndarray) -> np.ndarray:
    """The training points after the reducer: under UMAP, their embedding, where ``knn_place``
    puts each of them (duplicates: at their mean), so the search is skipped."""
    if isinstance(reducer, UMAPPlacement):
        return reducer.embedding_.astype(np.float64)
    return standard if reducer == "passthrough" else reducer.transform(standard)


def _normalizer(config: MixtureConfig, n_features: int):
    """sklearn's Normalizer (unit L2 length; stateless) for normalize="l2", else "passthrough"."""
    if config.normalize == "none":
        return "passthrough"
    return Normalizer(norm="l2").fit(np.zeros((1, n_features)))


def _fit_scaler(latents: np.ndarray) -> StandardScaler:
    scaler = StandardScaler().fit(latents)
    scaler.scale_ = np.where(np.sqrt(scaler.var_) < 1e-8, 1.0, np.sqrt(scaler.var_))  # constant: unscaled
    return scaler


def _restore_scaler(center: np.ndarray, scale: np.ndarray) -> StandardScaler:
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = center, scale, scale**2
    scaler.n_features_in_ = len(center)
    return scaler


def _reducer_arrays(reducer) -> dict[str, np.ndarray]:
    if isinstance(reducer, PCA):
        scale = np.sqrt(reducer.explained_variance_)
        return {"pca_mean": reducer.mean_, "pca_components": reducer.components_, "pca_scale": scale}
    if isinstance(reducer, UMAPPlacement):
        return {"umap_inputs": reducer.inputs_, "umap_embedding": reducer.embedding_}
    return {}


def _restore_reducer(arrays: dict[str, np.ndarray], config: MixtureConfig):
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
