"""aegmm and its variants: `--variant reducer=umap,reduced_dim=16` style settings, run cheaply.

Variants whose settings resolve to the same network share one trained autoencoder: it is
trained once per distinct model and training settings as `fit` resolves them (every "auto"
chosen; a mixture setting counts where one follows it, as `latent_dim auto` follows the
reducer), through the public `ImageClusterer.fit` (so its wall time is the real fit time), and
every (variant, K) pair then refits only `aegmm.mixture.LatentMixture` on the cached latent
vectors, which is exactly what `fit` does after training. Three settings exist only here (no
library change is needed to try them):

- `recon_feature=1`: append log(per-image reconstruction MSE) to the latent vector as one more
  column before the mixture (standardised like the others, then reduced).
- `recon_only=1`: cluster on log(reconstruction MSE) alone (1-D, reducer "none").
- `mixture_seed=N`: reseed only the reducer and EM (the autoencoder is shared), to see how much
  of a difference between variants is the mixture's own seed-to-seed spread.

`features=bottleneck|pooled` is a mixture setting here too: the shared network encodes the images
once more for a variant whose features differ from those of the fitted run (or of a cached run).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from aegmm import ImageClusterer
from aegmm.config import MixtureConfig, RunConfig
from aegmm.contrastive import BEFORE_FIELD
from aegmm.evaluation.image_scores import high_frequency, reconstruction
from aegmm.mixture import LatentMixture
from aegmm.pipeline import resolve_auto
from aegmm.preprocess import conform_images
from aegmm.train import encode
from common import measure
from peers import Outcome

TRAIN_KEYS = (
    "image_size",
    "channels",
    "latent_dim",
    "stem",
    "width",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "val_fraction",
    "noise",
    "flip",
    "seed",
    "precision",
    "objective",
    "temperature",
    "view_size",
    "stem_init",
    "train_images",
    "members",
    "train_minutes",
)
MIXTURE_KEYS = (
    "covariance_type",
    "normalize",
    "reducer",
    "reduced_dim",
    "n_init",
    "candidates",
    "reg_covar",
    "mixture_seed",
    "features",
)
EXTRA_KEYS = ("recon_feature", "recon_only")
# settings that take a whole number, or auto
COUNT_OR_AUTO = ("reduced_dim", "n_init", "candidates", "batch_size", "epochs", "members", "latent_dim")
AMOUNT_OR_AUTO = ("noise",)  # a number, or auto
_DEFAULTS = {
    name: p.default for name, p in inspect.signature(ImageClusterer).parameters.items() if name != "self"
}


@dataclass(frozen=True)
class Variant:
    name: str  # "default" or the option text, e.g. "reducer=umap,reduced_dim=16"
    train: tuple[tuple[str, object], ...] = ()  # settings that need their own autoencoder
    mixture: tuple[tuple[str, object], ...] = ()  # settings of the mixture only
    extra: tuple[tuple[str, object], ...] = ()  # recon_feature / recon_only

    @property
    def settings(self) -> dict:
        return dict(self.train + self.mixture + self.extra)


def _value(key: str, text: str):
    default = _DEFAULTS.get(key)
    if key == "mixture_seed":
        return int(text)
    if key in EXTRA_KEYS or isinstance(default, bool):
        if text.lower() not in ("0", "1", "true", "false"):
            raise ValueError(f"{key} must be 0/1 or true/false, got {text!r}")
        return text.lower() in ("1", "true")
    if isinstance(default, int) or key == "channels" or (key in COUNT_OR_AUTO and text != "auto"):
        return int(text)
    if isinstance(default, float) or (key in AMOUNT_OR_AUTO and text != "auto"):
        return float(text)
    return text


def parse_variant(text: str) -> Variant:
    """'key=value,key=value' -> Variant; keys are ImageClusterer parameters or recon_*."""
    if text == "default":
        return Variant("default")
    groups: dict[str, list] = {"train": [], "mixture": [], "extra": []}
    for part in filter(None, text.split(",")):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"a variant is key=value[,key=value...], got {part!r} in {text!r}")
        if key in TRAIN_KEYS:
            groups["train"].append((key, _value(key, raw.strip())))
        elif key in MIXTURE_KEYS:
            groups["mixture"].append((key, _value(key, raw.strip())))
        elif key in EXTRA_KEYS:
            groups["extra"].append((key, _value(key, raw.strip())))
        else:
            known = ", ".join(TRAIN_KEYS + MIXTURE_KEYS + EXTRA_KEYS)
            raise ValueError(f"unknown variant setting {key!r}; expected one of {known}")
    return Variant(text, *(tuple(sorted(groups[g])) for g in ("train", "mixture", "extra")))


@dataclass
class Trained:
    """One autoencoder and what every variant on top of it needs."""

    clusterer: ImageClusterer
    fit_latents: np.ndarray
    score_latents: np.ndarray
    fit_error: np.ndarray  # per-image reconstruction MSE in [0, 1] pixel units
    score_error: np.ndarray
    timings: dict = field(default_factory=dict)
    score_high_frequency: np.ndarray | None = None  # aegmm's image score of the scored images
    images: tuple[np.ndarray, np.ndarray] | None = None  # (fit, score), to encode other features
    other_features: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    run_config: RunConfig | None = None  # the network's settings, unresolved, mixture left to variants

    @property
    def features(self) -> str:
        """The features `fit_latents` and `score_latents` hold."""
        return self.clusterer.config_.mixture.features

    def latents(self, features: str) -> tuple[np.ndarray, np.ndarray]:
        """(fit, score) features of this network: "bottleneck" or "pooled" (encoded once each)."""
        if features == self.features:
            return self.fit_latents, self.score_latents
        if features not in self.other_features:
            model = self.clusterer.config_.model

            def encoded(images: np.ndarray) -> np.ndarray:
                images = conform_images(images, model.image_size, model.channels)
                return encode(
                    self.clusterer.autoencoder_, images, self.clusterer.normalizer_, features=features
                )

            fit, score = self.images
            fit_x = encoded(fit)
            self.other_features[features] = fit_x, fit_x if score is fit else encoded(score)
        return self.other_features[features]


def reconstruction_error(clusterer: ImageClusterer, images: np.ndarray) -> np.ndarray:
    """Per-image mean squared error between the image and its reconstruction, pixels in [0, 1].

    The error is measured at the network's size (digits: 8x8 resized to 32x32), as it sees them.
    """
    model = clusterer.config_.model
    out = np.empty(len(images))
    for start in range(0, len(images), 2048):
        block = conform_images(images[start : start + 2048], model.image_size, model.channels)
        out[start : start + len(block)] = -reconstruction(block, clusterer.reconstruct(block))
    return out


def train(
    variant: Variant,
    fit: np.ndarray,
    score: np.ndarray,
    k: int,
    epochs: int | None,
    cache: Path | None = None,
    base: dict | None = None,
) -> Trained:
    """Fit ImageClusterer (autoencoder + K-component mixture) and encode both image sets.

    `base` holds ImageClusterer settings applied under the variant's own (the smoke run's tiny
    network, for example); mixture settings given there carry over to `cluster` through
    `Trained.run_config`.

    With `cache`, the fitted clusterer (aegmm's own safetensors + JSON format), the latents and
    the reconstruction errors are saved there, and reused by a later run with the same images and
    resolved network (`resolved_network`), so mixture-only variants can be tried without
    retraining; the timings reported are those of the run that trained it. `cluster` chooses each
    variant's mixture settings afresh (`variant_mixture`), so a changed mixture default applies to
    a cached network too.
    """
    params = network_params(variant, epochs, base)  # ImageClusterer.fit's, for the first variant
    network = {key: value for key, value in params.items() if key not in dict(variant.mixture)}
    folder = trained = None
    if cache is not None:
        network_settings = resolved_network(params, fit)
        key = [_keyed(network_settings), _digest(fit), _digest(score)]
        # several members' cached latents are each member's vectors as they are, not unit scaled
        if network_settings["train"]["members"] > 1:
            key.append("members side by side unscaled")
        folder = cache / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        if (folder / "arrays.npz").exists():
            trained = _load_cached(folder, score is fit)
    if trained is None:
        trained = _train(params, fit, score, k)
        if folder is not None:
            _save_cached(folder, trained, score is fit)
    run_config = _run_config(network, fit, n_components=k)
    return replace(
        trained,
        score_high_frequency=high_frequency(score),
        images=(fit, score),
        run_config=run_config,
    )


def _keyed(network_settings: dict) -> dict:
    """The settings without training settings added since caches were written that hold the value
    which kept the old behaviour (contrastive.BEFORE_FIELD): such a network keys as before, so an
    earlier cache still holds it."""
    train = {k: v for k, v in network_settings["train"].items() if BEFORE_FIELD.get(k, object()) != v}
    return network_settings | {"train": train}


def network_params(variant: Variant, epochs: int | None, base: dict | None) -> dict:
    """ImageClusterer's settings for the variant's fit: `base`, then the variant's own, `epochs` where
    neither names them. The mixture settings count too: `latent_dim auto` follows the reducer."""
    params = {**(base or {}), **dict(variant.train), **dict(variant.mixture)}
    if epochs is not None and "epochs" not in params:
        params["epochs"] = epochs
    params.pop("mixture_seed", None)  # applied per mixture in `cluster`
    return params


def resolved_network(params: dict, fit: np.ndarray) -> dict:
    """The model and training settings ImageClusterer(**params).fit(fit) uses, every "auto" resolved
    as fit resolves it (the epochs, the noise, the precision on this machine, the latent size under
    the reducer): variants with equal ones share a network, and a changed default never reuses a
    stale one."""
    resolved = resolve_auto(_run_config(params, fit, device="cpu"), len(fit), progress=False)
    return {"model": asdict(resolved.model), "train": asdict(resolved.train)}


def variant_mixture(trained: Trained, settings: dict) -> MixtureConfig:
    """The mixture settings `fit` would choose at this commit for the trained network's images with
    these `settings` given: the rest "auto" (a cached network is clustered with today's defaults,
    never the ones its run saved, and `reducer=pca` brings PCA's restarts and candidates)."""
    config = trained.run_config
    given = replace(config, mixture=replace(config.mixture, **settings))
    return resolve_auto(given, len(trained.images[0]), progress=False).mixture


def _run_config(params: dict, fit: np.ndarray, **fixed) -> RunConfig:
    """ImageClusterer(**params, **fixed)'s settings, unresolved, for a network of the fit images' channels."""
    return ImageClusterer(progress=False, **params, **fixed)._configs(_channels(params, fit))


def _channels(params: dict, fit: np.ndarray) -> int:
    """The channels the network is built for: given, or the fit images'."""
    return params.get("channels") or (fit.shape[-1] if fit.ndim == 4 else 1)


def _digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def _save_cached(folder: Path, trained: Trained, same: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    trained.clusterer.save(folder / "run")
    np.savez(
        folder / "arrays.npz",
        fit_latents=trained.fit_latents,
        score_latents=trained.score_latents,
        fit_error=trained.fit_error,
        score_error=trained.score_error,
    )
    (folder / "timings.json").write_text(json.dumps({**trained.timings, "same_images": same}))


def _load_cached(folder: Path, same: bool) -> Trained:
    from aegmm import load

    arrays = np.load(folder / "arrays.npz")
    timings = json.loads((folder / "timings.json").read_text())
    timings["from_cache"] = str(folder)
    return Trained(
        load(folder / "run"),
        arrays["fit_latents"],
        arrays["fit_latents"] if same else arrays["score_latents"],
        arrays["fit_error"],
        arrays["fit_error"] if same else arrays["score_error"],
        timings,
    )


def _train(params: dict, fit: np.ndarray, score: np.ndarray, k: int) -> Trained:
    clusterer = ImageClusterer(n_components=k, progress=False, device="cpu", **params)
    with measure() as fitting:
        clusterer.fit(fit)
    with measure() as encoding:
        fit_latents = clusterer.transform(fit)
        score_latents = fit_latents if score is fit else clusterer.transform(score)
    with measure() as reconstructing:
        fit_error = reconstruction_error(clusterer, fit)
        score_error = fit_error if score is fit else reconstruction_error(clusterer, score)
    history, train = clusterer.history_, clusterer.config_.train
    timings = {
        "fit": fitting.as_dict(),  # train + encode + one mixture: ImageClusterer.fit as a user runs it
        "train_seconds": round(sum(h["seconds"] for h in history), 3),
        "train_images_per_second": round(float(np.median([h["images_per_second"] for h in history])), 1),
        "final_train_loss": round(history[-1]["train_loss"], 5),
        "final_val_loss": round(history[-1]["val_loss"], 5),
        "encode": encoding.as_dict(),
        "reconstruct": reconstructing.as_dict(),
        "epochs": train.epochs,  # and the other settings that "auto" resolved for these images
        "objective": train.objective,
        "batch_size": train.batch_size,
        "precision": train.precision,
        "noise": train.noise,
    }
    return Trained(clusterer, fit_latents, score_latents, fit_error, score_error, timings)


def _features(variant: Variant, trained: Trained, features: str) -> tuple[np.ndarray, np.ndarray]:
    extra = dict(variant.extra)
    fit_log, score_log = np.log(trained.fit_error)[:, None], np.log(trained.score_error)[:, None]
    if extra.get("recon_only"):
        return fit_log, score_log
    fit_x, score_x = trained.latents(features)
    if extra.get("recon_feature"):
        return np.hstack([fit_x, fit_log]), np.hstack([score_x, score_log])
    return fit_x, score_x


def cluster(variant: Variant, trained: Trained, k: int) -> tuple[Outcome, dict]:
    """Refit the mixture of `variant` with K components on the cached latents; score the others."""
    settings = dict(variant.mixture)
    if "mixture_seed" in settings:  # reseed the reducer and EM only: the spread of one autoencoder
        settings["seed"] = settings.pop("mixture_seed")
    config = replace(variant_mixture(trained, settings), n_components=k)
    extra = dict(variant.extra)
    if extra.get("recon_only"):
        config = replace(config, reducer="none")
    if extra.get("recon_only") or extra.get("recon_feature"):
        config = replace(config, parts=1)  # the error column is no member's: scaled as one vector
    fit_x, score_x = _features(variant, trained, config.features)
    with measure() as mixing:
        mixture = LatentMixture(config).fit(fit_x)
        proba = mixture.predict_proba(score_x)
        nll = -mixture.score_samples(score_x)
    outcome = Outcome(
        labels=proba.argmax(axis=1),
        scores={
            "nll": nll,
            "uncertainty": 1.0 - proba.max(axis=1),
            # AEROBLADE's orientation: generated images are reconstructed better (lower error)
            "recon": -trained.score_error,
            # aegmm.evaluation.image_scores: more energy next to Nyquist = generated / resampled
            "high_frequency": trained.score_high_frequency,
        },
        notes={"converged": bool(mixture.gmm_.converged_), "n_iter": int(mixture.gmm_.n_iter_)},
    )
    return outcome, mixing.as_dict()
