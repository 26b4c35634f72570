"""ImageClusterer: images -> autoencoder -> latent vectors -> mixture, in scikit-learn's style."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from . import distributed
from .checkpoint import check_resume_layout, member_folder
from .config import AUTO_BY_REDUCER, MixtureConfig, ModelConfig, RunConfig, TrainConfig
from .data import ImageSet, load_images
from .io import SavedRun, read_run, save_run
from .mixture import LatentMixture
from .nn import Ensemble
from .precision import resolve_on_device
from .preprocess import Normalizer, conform_images
from .progress import say
from .train import encode, encode_and_reconstruct, train_autoencoder

ImageInput = ImageSet | str | Path | np.ndarray
LATENTS_IN_MEMORY = 500_000  # above this many training images, latents go to a memory-mapped file

_M, _T, _X = ModelConfig, TrainConfig, MixtureConfig  # field defaults are the single source


@dataclass
class Assignments:
    """Cluster, its probability and the log-likelihood of each image, with the image's path."""

    paths: list[str]
    cluster: np.ndarray
    probability: np.ndarray
    log_likelihood: np.ndarray
    skipped: list[tuple[str, str]]
    latents: np.ndarray | None = None  # (N, latent_dim) float32, the vectors the mixture scored
    typicality: np.ndarray | None = None  # log p(x, cluster of x): ranks a cluster's images


def _train(images, config: RunConfig, normalizer, checkpoint_dir, resume: bool, progress: bool):
    """The autoencoder trained with the run's objective, or an Ensemble of `members` of them (each in
    its own checkpoint folder, member0, member1, ...): (model on CPU, history)."""
    train, members = config.train, config.train.members
    if resume and checkpoint_dir is not None:
        check_resume_layout(checkpoint_dir, members)
    if members == 1:
        return _train_one(images, config.model, train, normalizer, checkpoint_dir, resume, progress)
    networks, histories = [], []
    for index in range(members):
        say(f"training member {index + 1} of {members} (seed {train.seed + index})", enabled=progress)
        folder = None if checkpoint_dir is None else member_folder(checkpoint_dir, index)
        member = train.member(index)
        if histories and member.epochs == "auto":  # --train-minutes: the first member's timed epochs
            member = replace(member, epochs=len(histories[0]))
        network, history = _train_one(images, config.model, member, normalizer, folder, resume, progress)
        networks.append(network)
        histories.append(history)
    return Ensemble(networks), mean_history(histories)


def _train_one(images, model: ModelConfig, train: TrainConfig, normalizer, checkpoint_dir, resume, progress):
    trainer, options = train_autoencoder, {}
    if train.objective != "reconstruction":
        from .contrastive import train_contrastive

        trainer = train_contrastive
        options = {"mode": "simclr" if train.objective == "contrastive" else "hybrid"}
        options["temperature"] = train.temperature
        options["view_size"] = train.view_size
        options["stem_init"] = train.stem_init
    return trainer(
        images,
        model,
        train,
        normalizer,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        **options,
    )


def mean_history(histories: list[list[dict]]) -> list[dict]:
    """One entry per epoch: the members' mean of each number (the sum of their seconds), and each
    member's training loss."""
    merged = []
    for entries in zip(*histories, strict=True):
        numbers = {k for k, v in entries[0].items() if isinstance(v, int | float) and k != "epoch"}
        entry = {"epoch": entries[0]["epoch"]}
        for key in sorted(numbers):
            values = [e[key] for e in entries]
            entry[key] = float(np.sum(values) if key == "seconds" else np.mean(values))
        entry["member_train_loss"] = [e["train_loss"] for e in entries]
        merged.append(entry)
    return merged


def resolve_auto(config: RunConfig, n_images: int, progress: bool) -> RunConfig:
    """The run's config with the training's and the mixture's "auto" settings chosen for its
    images (and said)."""
    channels = config.model.channels
    train, _ = resolve_on_device(config.train, channels=channels, n_train=config.train.train_count(n_images))
    mixture = config.mixture.resolve(
        channels=channels, n_images=n_images, objective=train.objective, parts=train.members
    )
    model = config.model.resolve(train.objective, mixture.reducer)
    automatic = [
        (name, getattr(chosen, name))
        for given, chosen, names in (
            (config.model, model, ("latent_dim",)),
            (config.train, train, ("objective", "batch_size", "epochs", "precision", "noise", "members")),
            (config.mixture, mixture, ("reducer", *AUTO_BY_REDUCER["pca"], "features")),
        )
        for name in names
        if getattr(given, name) == "auto" != getattr(chosen, name)  # epochs under train_minutes: timed later
        and (name != "noise" or train.objective == "reconstruction")
        and (name != "members" or train.members > 1)
    ]  # noise is said only where it applies (contrastive training ignores it), members beyond one
    if automatic:
        kind = "single-channel" if channels == 1 else "colour"
        shown = ", ".join(f"{name} {value}" for name, value in automatic)
        say(f"settings for {n_images:,} {kind} images: {shown}", enabled=progress)
    return replace(config, model=model, train=train, mixture=mixture)


class ImageClusterer(BaseEstimator):
    """Cluster images with a ResNet-18 autoencoder and a Gaussian mixture on its latent vectors.

    Parameters mirror the fields of ModelConfig, TrainConfig and MixtureConfig; `channels=None`
    takes the channel count of the training images.
    """

    def __init__(
        self,
        *,
        image_size: int = _M.image_size,
        channels: int | None = None,
        latent_dim: int | str = _M.latent_dim,
        stem: str = _M.stem,
        width: float = _M.width,
        epochs: int | str = _T.epochs,
        batch_size: int | str = _T.batch_size,
        lr: float = _T.lr,
        weight_decay: float = _T.weight_decay,
        val_fraction: float = _T.val_fraction,
        noise: float | str = _T.noise,
        flip: bool = _T.flip,
        train_images: int = _T.train_images,
        precision: str = _T.precision,
        objective: str = _T.objective,
        temperature: float = _T.temperature,
        view_size: int = _T.view_size,
        stem_init: str = _T.stem_init,
        members: int | str = _T.members,
        train_minutes: float = _T.train_minutes,
        n_components: int | str = _X.n_components,
        k_range: tuple[int, int] = _X.k_range,
        covariance_type: str = _X.covariance_type,
        normalize: str = _X.normalize,
        reducer: str = _X.reducer,
        reduced_dim: int | str = _X.reduced_dim,
        n_init: int | str = _X.n_init,
        candidates: int | str = _X.candidates,
        candidate_rule: str = _X.candidate_rule,
        reg_covar: float = _X.reg_covar,
        max_fit_samples: int = _X.max_fit_samples,
        features: str = _X.features,
        seed: int = 0,
        device: str = _T.device,
        encode_batch_size: int = 128,
        progress: bool = True,
    ) -> None:
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        self.stem, self.width, self.epochs, self.batch_size = stem, width, epochs, batch_size
        self.lr, self.weight_decay, self.val_fraction = lr, weight_decay, val_fraction
        self.noise, self.flip, self.n_components, self.k_range = noise, flip, n_components, k_range
        self.covariance_type, self.reducer, self.reduced_dim = covariance_type, reducer, reduced_dim
        self.normalize, self.features = normalize, features
        self.n_init, self.candidates, self.reg_covar, self.seed = n_init, candidates, reg_covar, seed
        self.max_fit_samples, self.train_images, self.precision = max_fit_samples, train_images, precision
        self.objective, self.temperature, self.view_size = objective, temperature, view_size
        self.stem_init = stem_init
        self.members, self.candidate_rule, self.train_minutes = members, candidate_rule, train_minutes
        self.device, self.encode_batch_size, self.progress = device, encode_batch_size, progress

    def check_params(self) -> None:
        """Validate every setting now (as ``fit`` would), e.g. before an output folder is made."""
        self._configs(channels=self.channels or 3)

    def _configs(self, channels: int) -> RunConfig:
        """The config dataclasses from this clusterer's parameters of the same names (keywords only)."""
        params = self.get_params()

        def build(kind: type, **fixed):
            return kind(**({f.name: params[f.name] for f in fields(kind) if f.name in params} | fixed))

        return RunConfig(
            model=build(ModelConfig, channels=channels),
            train=build(TrainConfig),
            mixture=build(MixtureConfig, k_range=tuple(self.k_range)),
        )

    @classmethod
    def from_config(cls, config: RunConfig, *, progress: bool = True) -> ImageClusterer:
        """An unfitted clusterer with a saved run's settings (the inverse of `_configs`)."""
        m, t, x = asdict(config.model), asdict(config.train), asdict(config.mixture)
        params = m | {k: v for k, v in t.items() if k != "device"} | x
        params.pop("max_iter")  # not a clusterer parameter: always the MixtureConfig default
        params.pop("parts")  # follows members
        params["seed"] = t["seed"]
        return cls(**params, device="auto", progress=progress)  # the loading machine may differ

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, data: ImageInput, y=None, *, checkpoint_dir: Path | None = None, resume: bool = False):
        """Train the autoencoder on the images, then fit the mixture on their latent vectors.

        The training images' assignments are kept (``training_assignments_``), from the one
        encoding pass that fitted the mixture.
        """
        loaded = self._load(data, self.channels)
        images = loaded.images
        config = self._configs(self.channels or images.shape[-1])
        images = conform_images(images, config.model.image_size, config.model.channels)
        config = resolve_auto(config, len(images), self.progress)
        normalizer = Normalizer.fit(images)
        autoencoder, history = _train(images, config, normalizer, checkpoint_dir, resume, self.progress)
        if config.train.epochs == "auto":  # timed under train_minutes: the run saves the epochs trained
            config = replace(config, train=replace(config.train, epochs=len(history)))
        self.config_, self.normalizer_, self.autoencoder_, self.history_ = (
            config,
            normalizer,
            autoencoder,
            history,
        )
        if not distributed.is_main():
            return self  # under torchrun every process trains; rank 0 alone clusters and saves
        with tempfile.TemporaryDirectory(prefix="aegmm-latents-") as scratch:
            big = len(images) > LATENTS_IN_MEMORY
            latents = self._encode(images, Path(scratch) / "latents.npy" if big else None)
            self._fit_mixture(latents, config)
            table = self._assignments(latents, loaded.paths, loaded.skipped, keep_latents=not big)
        self.training_assignments_, self.labels_ = table, table.cluster
        return self

    def _fit_mixture(self, latents: np.ndarray, config: RunConfig) -> None:
        x = config.mixture
        ks = (
            f"K={x.k_range[0]}..{x.k_range[1]}, lowest BIC"
            if x.n_components == "auto"
            else f"K={x.n_components}"
        )
        vectors = "pooled feature vectors" if x.features == "pooled" else "latent vectors"
        say(f"fitting the Gaussian mixture ({ks}) on {len(latents):,} {vectors}", enabled=self.progress)
        workers = torch.get_num_threads()  # --threads: the candidates share the cores training used
        self.mixture_ = LatentMixture(x).fit(latents, progress=self.progress, n_jobs=workers)
        self.n_components_ = int(self.mixture_.gmm_.n_components)

    def fit_predict(self, data: ImageInput, y=None) -> np.ndarray:
        return self.fit(data).labels_

    # -- using ----------------------------------------------------------------------------------

    def transform(self, data: ImageInput) -> np.ndarray:
        """The vectors the mixture clusters, (N, feature_dim): the latent vectors (latent_dim numbers)
        or, with ``features="pooled"`` (contrastive encoders' default), the trunk's pooled output."""
        return self._encode(self._images(data))

    def predict(self, data: ImageInput) -> np.ndarray:
        """Most probable cluster of each image."""
        return self._fitted_mixture().predict(self.transform(data))

    def predict_proba(self, data: ImageInput) -> np.ndarray:
        """Membership probabilities (N, K); each row sums to 1."""
        return self._fitted_mixture().predict_proba(self.transform(data))

    def score_samples(self, data: ImageInput) -> np.ndarray:
        """Log-likelihood of each image under the mixture (in the mixture's feature space)."""
        return self._fitted_mixture().score_samples(self.transform(data))

    def reconstruct(self, data: ImageInput, *, return_latents: bool = False):
        """Reconstructed images as float32 pixels in [0, 1], (N, H, W, C).

        With ``return_latents``, (the vectors `transform` gives, reconstructions) from one pass.
        """
        check_is_fitted(self, "autoencoder_")
        latents, pixels = encode_and_reconstruct(
            self.autoencoder_,
            self._images(data),
            self.normalizer_,
            batch_size=self.encode_batch_size,
            device=self._device(),
            features=self.config_.mixture.features,
        )
        return (latents, pixels) if return_latents else pixels

    def assign(self, data: ImageInput) -> Assignments:
        """Cluster, probability and log-likelihood of each image, with its path; one encoding pass."""
        self._fitted_mixture()
        loaded = self._load(data, self.config_.model.channels)
        latents = self._encode(conform_images(loaded.images, self.image_size, self.config_.model.channels))
        return self._assignments(latents, loaded.paths, loaded.skipped)

    def _assignments(self, latents, paths, skipped, *, keep_latents: bool = True) -> Assignments:
        proba, log_likelihood = self.mixture_.score(latents)  # the features computed once for both
        probability = proba.max(axis=1)
        return Assignments(
            paths=paths,
            cluster=proba.argmax(axis=1),
            probability=probability,
            log_likelihood=log_likelihood,
            skipped=skipped,
            latents=np.asarray(latents) if keep_latents else None,  # not a scratch memory map
            typicality=np.log(np.maximum(probability, 1e-300)) + log_likelihood,
        )

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to the folder ``path`` (safetensors and JSON); ``load`` reads it back."""
        check_is_fitted(self, "mixture_")
        parts = SavedRun(self.config_, self.autoencoder_, self.normalizer_, self.mixture_, self.history_)
        return save_run(Path(path), parts)

    # -- helpers --------------------------------------------------------------------------------

    def _fitted_mixture(self) -> LatentMixture:
        check_is_fitted(self, "mixture_")
        return self.mixture_

    def _device(self):
        return distributed.resolve_device(self.device)

    def _encode(self, images: np.ndarray, out: Path | None = None) -> np.ndarray:
        check_is_fitted(self, "autoencoder_")
        return encode(
            self.autoencoder_,
            images,
            self.normalizer_,
            batch_size=self.encode_batch_size,
            device=self._device(),
            progress=self.progress and len(images) > 4096,  # ~2 s at the 2,309 img/s of results/speed.md
            out=out,
            features=self.config_.mixture.features,
        )

    def _load(self, data: ImageInput, channels: int | None) -> ImageSet:
        if isinstance(data, ImageSet):
            return data
        if isinstance(data, str | Path):
            return load_images(data, image_size=self.image_size, channels=channels, progress=self.progress)
        images = conform_images(np.asarray(data), None, None)
        return ImageSet(images, [str(i) for i in range(len(images))])

    def _images(self, data: ImageInput) -> np.ndarray:
        check_is_fitted(self, "autoencoder_")
        model = self.config_.model
        return conform_images(self._load(data, model.channels).images, model.image_size, model.channels)


def load(path: str | Path, *, progress: bool = True) -> ImageClusterer:
    """Load a fitted ImageClusterer from a run folder written by ``save`` or ``aegmm fit``."""
    saved = read_run(path)
    clusterer = ImageClusterer.from_config(saved.config, progress=progress)
    clusterer.config_, clusterer.normalizer_ = saved.config, saved.normalizer
    clusterer.autoencoder_, clusterer.history_, clusterer.mixture_ = (
        saved.autoencoder,
        saved.history,
        saved.mixture,
    )
    clusterer.n_components_ = int(saved.mixture.gmm_.n_components)
    return clusterer
