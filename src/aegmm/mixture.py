"""Clustering latent vectors: Pipeline((L2,) StandardScaler, PCA or UMAP, GaussianMixture)."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict
from typing import NamedTuple

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .candidates import Candidate, agreement, evenness, fit_side_by_side
from .config import MixtureConfig
from .embedding import UMAPPlacement
from .mixture_arrays import (
    GMM_ARRAYS,
    check_arrays,
    reducer_arrays,
    restore_gmm,
    restore_reducer,
    restore_scaler,
)
from .progress import say
from .scaling import SCALINGS, normalizer, normalizers

BATCH = 100_000  # latents scored at once: memory does not grow with the number of images
PCA_MIN_VARIANCE = 1e-12  # whitening divides by at least sqrt(1e-12): rank-deficient latents stay finite


class ScalingFit(NamedTuple):
    """One scaling's candidates (normalize "both" fits two) and what they were fitted on."""

    normalizer: object  # scaling.UnitParts or "passthrough"
    scaler: StandardScaler
    standard: np.ndarray  # the scaled, standardised training latents
    candidates: dict[int, Candidate]  # by seed


class LatentMixture:
    """scikit-learn's Pipeline(normalizer, StandardScaler, reducer, GaussianMixture) on training latents.

    The normalizer scales each vector (or each member's part of it) to unit length, or is nothing
    (normalize "l2" or "none"; scaling.py); normalize="both" fits candidates under each.

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
        whose training clusters are the most equal in size (``evenness_``). Under normalize="both"
        the candidates are fitted under each scaling of scaling.py (l2 on the seeds from ``seed``,
        none on the next ``candidates`` seeds; ``candidate_scalings_``): the rule keeps one of each
        scaling's, agreement counting only the candidates of its own scaling, and of the two the
        more even is kept (``scaling_``). With ``progress``, one line per K tried (under "auto")
        and per candidate, and the choices, go to stderr.
        """
        latents = _check_latents(self._subsample(latents))
        cfg, groups = self.config, {}
        tried = normalizers(cfg.normalize, cfg.parts, latents.shape[1])
        for index, (name, scaling) in enumerate(tried.items()):
            seeds = range(cfg.seed + index * cfg.candidates, cfg.seed + (index + 1) * cfg.candidates)
            groups[name] = self._fit_scaling(latents, scaling, seeds, progress, n_jobs)
        fits = {name: group.candidates for name, group in groups.items()}  # each scaling's {seed: Candidate}
        self.candidate_scalings_ = {seed: name for name, own in fits.items() for seed in own}
        fitted = {seed: candidate for own in fits.values() for seed, candidate in own.items()}
        self.agreement_ = {}  # each candidate's with its own scaling's others: empty for one
        for own in fits.values():
            self.agreement_ |= agreement({seed: candidate.labels for seed, candidate in own.items()})
        self.evenness_ = {}  # like agreement_: empty for one candidate
        if len(fitted) > 1:
            self.evenness_ = {seed: evenness(c.labels, c.gmm.n_components) for seed, c in fitted.items()}
        for seed, even in self.evenness_.items():
            ari = f"mean ARI with the others {self.agreement_[seed]:.3f}, " if seed in self.agreement_ else ""
            tag = f" ({self.candidate_scalings_[seed]})" if len(groups) > 1 else ""
            say(f"  candidate seed {seed}{tag}: {ari}cluster sizes' evenness {even:.3f}", enabled=progress)
        scores, why = {
            "agreement": (self.agreement_, "the most agreement"),
            "balance": (self.evenness_, "the most equal cluster sizes"),
        }[cfg.candidate_rule]
        kept = {name: max(own, key=lambda seed: scores.get(seed, 0.0)) for name, own in fits.items()}
        self.scaling_ = max(kept, key=lambda name: self.evenness_.get(kept[name], 0.0))  # ties: l2
        chosen = self.kept_ = kept[self.scaling_]
        for name, seed in kept.items():
            if name != self.scaling_:  # normalize="both": the other scaling's pick, less even
                why += f" among the {self.scaling_} candidates; evenness {self.evenness_[chosen]:.3f}"
                why += f" against {self.evenness_[seed]:.3f} for seed {seed}, the {name} candidates' pick"
        say(f"kept candidate seed {chosen} ({why})", enabled=progress and len(fitted) > 1)
        group = groups[self.scaling_]
        reducer, gmm, self.bic_curve_ = group.candidates[chosen][:3]
        if isinstance(reducer, UMAPPlacement):  # the points every candidate placed
            reducer.inputs_ = np.asarray(group.standard, dtype=np.float32)
        self.pipeline_ = _pipeline(group.normalizer, group.scaler, reducer, gmm)
        return self

    def _fit_scaling(self, latents: np.ndarray, scaling, seeds: range, progress: bool, n_jobs: int):
        """One scaling's candidates, with what they were fitted on."""
        if scaling != "passthrough":
            latents = scaling.transform(latents)
        scaler = _fit_scaler(latents)
        standard = scaler.transform(latents)
        self._candidate_ks(_count_distinct(standard))  # fewer distinct points than K: a clear error now
        fitted = dict(zip(seeds, fit_side_by_side(self._fit_candidate, standard, seeds, n_jobs), strict=True))
        for candidate in fitted.values():
            candidate.say_bic(progress)
        return ScalingFit(scaling, scaler, standard, fitted)

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
        arrays |= reducer_arrays(self.pipeline_.named_steps["reduce"])
        arrays.update({f"gmm.{name}": getattr(self.gmm_, name) for name in GMM_ARRAYS})
        meta = {
            "config": asdict(self.config),
            "n_components": int(self.gmm_.n_components),
            "bic_curve": {str(k): v for k, v in self.bic_curve_.items()},
            "agreement": {str(seed): v for seed, v in self.agreement_.items()},
            "evenness": {str(seed): v for seed, v in self.evenness_.items()},
            "kept": self.kept_,
            "scaling": self.scaling_,
            "candidate_scalings": {str(seed): v for seed, v in self.candidate_scalings_.items()},
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
        mixture.kept_ = meta.get("kept")  # None in runs saved before "both"
        if mixture.kept_ is not None and type(mixture.kept_) is not int:
            raise ValueError(f"the mixture's kept candidate must be a seed (integer), got {mixture.kept_!r}")
        mixture.scaling_ = meta.get("scaling", config.normalize)  # saved before "both": the config's
        if mixture.scaling_ not in SCALINGS:
            expected = " or ".join(SCALINGS)
            raise ValueError(f"the mixture's scaling must be {expected}, got {mixture.scaling_!r}")
        mixture.candidate_scalings_ = {int(k): str(v) for k, v in meta.get("candidate_scalings", {}).items()}
        scaling = normalizer(mixture.scaling_, config.parts, len(arrays["center"]))
        scaler = restore_scaler(arrays["center"], arrays["scale"])
        reducer, gmm = restore_reducer(arrays, config), restore_gmm(arrays, meta, config)
        mixture.pipeline_ = _pipeline(scaling, scaler, reducer, gmm)
        return mixture


def _pipeline(scaling, scaler: StandardScaler, reducer, gmm: GaussianMixture) -> Pipeline:
    return Pipeline([("normalize", scaling), ("scale", scaler), ("reduce", reducer), ("gmm", gmm)])


def _reduced(reducer, standard: np.ndarray) -> np.ndarray:
    """The training points after the reducer: under UMAP, their embedding, where ``knn_place``
    puts each of them (duplicates: at their mean), so the search is skipped."""
    if isinstance(reducer, UMAPPlacement):
        return reducer.embedding_.astype(np.float64)
    return standard if reducer == "passthrough" else reducer.transform(standard)


def _fit_scaler(latents: np.ndarray) -> StandardScaler:
    scaler = StandardScaler().fit(latents)
    scaler.scale_ = np.where(np.sqrt(scaler.var_) < 1e-8, 1.0, np.sqrt(scaler.var_))  # constant: unscaled
    return scaler


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
