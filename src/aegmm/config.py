"""Settings of a run, as frozen dataclasses saved with every model (nanoGPT's GPTConfig style)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

FORMAT_VERSION = 1  # bump when the layout of a saved run changes
OBJECTIVES = ("reconstruction", "contrastive", "hybrid")  # TrainConfig.objective, besides auto
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")  # MixtureConfig.covariance_type (sklearn's)
FEATURES = ("bottleneck", "pooled")  # MixtureConfig.features, besides auto
PLANES = (64, 128, 256, 512)  # channels of ResNet-18's four stages at width 1.0
# What "auto" becomes when a run is fitted (TrainConfig.resolve, MixtureConfig.resolve; saved with
# the run). The objective follows the kind of image (README "Defaults and why"): colour images learn
# by contrast (NT-Xent), single-channel ones by reconstruction; the batch size follows the objective.
AUTO_OBJECTIVE = {3: "contrastive", 1: "reconstruction"}  # by channel count
AUTO_BATCH_SIZE = {"reconstruction": 128, "contrastive": 256, "hybrid": 256}  # by objective
# What the mixture clusters follows the objective: a contrastive encoder's pooled trunk output
# (SimCLR's "h", before the layers that serve the loss) clusters better than its bottleneck
# (benchmarks/results/features/NOTES.md); an autoencoder's bottleneck is the study's latent vector.
AUTO_FEATURES = {"reconstruction": "bottleneck", "contrastive": "pooled", "hybrid": "pooled"}
# Epochs follow the collection: AUTO_EPOCHS passes, or more for AUTO_MIN_STEPS steps (an autoencoder at
# most 50 passes): 16,000 CIFAKE images get 10, scikit-learn's 1,797 digits 39 (small_collections/);
# contrastive training always 500 steps: 100-200 CIFAKE images +0.02-0.03 (results/small_epochs/).
AUTO_EPOCHS, AUTO_MIN_STEPS = 10, 500
AUTO_MAX_EPOCHS = {"reconstruction": 50, "contrastive": AUTO_MIN_STEPS, "hybrid": AUTO_MIN_STEPS}
# Contrastive training in mixed precision gets AUTO_EPOCHS_MIXED passes (epochs 0.6x as long with bf16
# instructions, results/bf16_default/NOTES.md): 22 keep the CIFAKE fit in 15 min (results/epochs22/NOTES.md).
AUTO_EPOCHS_MIXED = 22
# Denoising: a single-channel autoencoder that auto epochs pass over more than AUTO_EPOCHS times
# trains on inputs plus Gaussian noise of std AUTO_NOISE. Digits (39 passes), 3 seeds: 0.936 +- 0.033
# with it, 0.895 +- 0.007 without (10 seeds with it: 0.904 +- 0.027, results/digits_seeds10/); MNIST
# 8,000 (10 passes): 0.903 +- 0.084 with it, 0.954 +- 0.005 without (benchmarks/results/denoising/).
AUTO_NOISE = 0.1
# Members: a single-channel autoencoder on AUTO_MEMBERS_MIN_TRAIN+ training images (50 images, the
# fewest measured with two) trains AUTO_MEMBERS networks side by side (nn.Ensemble). MNIST 8,000:
# 0.957 +- 0.003 against 0.921 +- 0.062 for one (benchmarks/results/ensemble/NOTES.md); 3,000: 18 of
# 24 windows right, one 11 of 30 (member_pairs/); digits 0.925 +- 0.030 (digits_scalings/).
AUTO_MEMBERS = 2
# The latent size: 64 numbers where UMAP clusters a single-channel autoencoder's latents (digits 0.948
# +- 0.003 / NMI 0.920 with 64, 0.925 +- 0.030 / 0.902 with 32: results/digits_latent64/NOTES.md),
# else the study's 32 (a contrastive projection head reads the bottleneck; under PCA 64 did worse).
AUTO_LATENT_DIM, AUTO_LATENT_DIM_UMAP = 32, 64  # PCA or UMAP on 823 long-tailed digits: small_grayscale/
# The reducer follows the features: UMAP from UMAP_MIN_IMAGES images, unless they are a colour
# autoencoder's latents (PCA clusters those better); the other settings follow it, and an autoencoder's
# single-channel latents get normalize "both": digits 0.931 +- 0.023, 0.889 +- 0.004 with l2 (scalings/).
UMAP_MIN_IMAGES = 20  # the smallest size measured: UMAP beat PCA on 20-900 images (results/umap_floor/)
AUTO_BY_REDUCER = {
    "umap": {"normalize": "l2", "reduced_dim": 10, "n_init": 20, "candidates": 5},
    "pca": {"normalize": "none", "reduced_dim": 20, "n_init": 3, "candidates": 1},
    "none": {"normalize": "none", "reduced_dim": 20, "n_init": 3, "candidates": 1},
}
# the choices of each setting that takes one of a few names (the command line offers exactly these)
CHOICES = {
    "stem": ("small", "strided", "standard"),  # ModelConfig.stem
    "precision": ("auto", "float32", "bfloat16", "float16"),  # TrainConfig.precision (precision_plan)
    "objective": ("auto", *OBJECTIVES),
    "stem_init": ("random", "whiten", "whiten-fixed"),  # TrainConfig.stem_init
    "covariance_type": COVARIANCE_TYPES,
    "reducer": ("auto", "none", "pca", "umap"),
    "normalize": ("auto", "none", "l2", "both"),
    "features": ("auto", *FEATURES),
    "candidate_rule": ("agreement", "balance"),
}


def check_choices(config, *names: str) -> None:
    """Each named setting of `config` must be one of its CHOICES (one readable line if not)."""
    for name in names:
        value = getattr(config, name)
        if value not in CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}")


def check_counts(config, *names: str) -> None:
    """Each named setting of `config` must be a whole number >= 1 or "auto" (one readable line if not)."""
    for name in names:
        value = getattr(config, name)
        if value != "auto" and (isinstance(value, (str, bool, float)) or value < 1):
            raise ValueError(f"{name} must be a whole number >= 1 or 'auto', got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    image_size: int = 32  # images are resized to this square size
    channels: int = 3  # 1 for grayscale, 3 for RGB
    latent_dim: int | str = "auto"  # latent vector size: numbers per image after the bottleneck;
    # auto: 64 for a single-channel autoencoder whose mixture runs umap, else 32 (the study's)
    stem: str = "small"  # small: 3x3 conv, no max-pool (small images); strided: the same conv with
    # stride 2 (a quarter of the small stem's work); standard: torchvision's 7x7 conv + max-pool
    width: float = 0.25  # channel multiplier: 1.0 is the full ResNet-18 (64-128-256-512 channels)

    def __post_init__(self) -> None:
        check_choices(self, "stem")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        check_counts(self, "latent_dim")
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        factor = self.downsampling
        if self.image_size < factor or self.image_size % factor:
            raise ValueError(
                f"image_size must be a positive multiple of {factor} for the {self.stem!r} stem, "
                f"got {self.image_size}"
            )

    def resolve(self, objective: str, reducer: str = "pca") -> ModelConfig:
        """This config with an "auto" latent size chosen for its channels, the `objective` and the
        mixture's `reducer`."""
        if self.latent_dim != "auto":
            return self
        umap = objective == "reconstruction" and self.channels == 1 and reducer == "umap"
        return replace(self, latent_dim=AUTO_LATENT_DIM_UMAP if umap else AUTO_LATENT_DIM)

    @property
    def downsampling(self) -> int:
        """How much the encoder shrinks each side: 8 for the small stem, 16 strided, 32 standard."""
        return {"small": 8, "strided": 16, "standard": 32}[self.stem]

    @property
    def planes(self) -> list[int]:
        """Channels of the encoder's four stages at this width (at least 8 each)."""
        return [max(8, int(round(p * self.width))) for p in PLANES]

    def feature_dim(self, features: str) -> int:
        """Numbers per image of the features "bottleneck" (latent_dim) or "pooled" (the last stage's)."""
        return self.latent_dim if features == "bottleneck" else self.planes[-1]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int | str = "auto"  # passes over the training images; auto: 10 (22 for contrastive
    # training under bfloat16 or float16 autocast), or more for a small collection (at least 500
    # optimisation steps; an autoencoder at most 50 passes)
    batch_size: int | str = "auto"  # images per optimisation step (global, over all processes);
    # auto: 256 for contrastive and hybrid training (NT-Xent wants many negatives), else 128
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    val_fraction: float = 0.1  # share of images held out to measure validation loss
    noise: float | str = "auto"  # denoising: std of the Gaussian noise added to the autoencoder's
    # training inputs (normalised units); 0 = off; auto: 0.1 for a small collection of
    # single-channel images (one that auto epochs pass over more than 10 times), else 0
    flip: bool = False  # random horizontal flips during training
    seed: int = 0  # seeds the split, the initial weights and the batch order
    device: str = "auto"  # "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "mps"
    train_images: int = 0  # train on a random N of the images (0 = all);
    # every image is still encoded and clustered (for millions of images)
    precision: str = "auto"  # training arithmetic. auto: on a GPU bfloat16 autocast where supported,
    # else float16 with a gradient scaler; on CPU bfloat16 autocast for the contrastive objectives
    # where the CPU has bfloat16 instructions (AVX512-BF16 or AMX; elsewhere it is emulated, slower),
    # else float32 (and for reconstruction: the study's arithmetic). float16: CUDA only
    objective: str = "auto"  # how the encoder learns. reconstruction: the study's autoencoder (MSE);
    # contrastive: SimCLR's NT-Xent on two augmented views of each image (no decoder: no
    # reconstructions); hybrid: contrastive plus a decoder on the detached encoder output, for the
    # report's reconstructions (about twice the time). auto: contrastive for colour, else reconstruction
    temperature: float = 0.2  # NT-Xent's temperature (contrastive and hybrid objectives)
    stem_init: str = "random"  # the first convolution's start (contrastive, hybrid): random, or whiten:
    # the whitening filters of the views' 3x3 patches, then trained; whiten-fixed: kept as they start
    view_size: int = 0  # side in pixels of the augmented views the contrastive objective trains
    # on (0: the image size; the reconstruction objective has no views); smaller views train
    # faster, the mixture still reads whole images at the image size
    members: int | str = "auto"  # autoencoders trained one after another (seeds seed, seed+1, ...);
    # the mixture clusters their vectors side by side (MixtureConfig.parts); reconstructions are the
    # members' mean. auto: 2 for a single-channel autoencoder on 45+ training images, else 1
    train_minutes: float = 0.0  # with epochs auto: train for about this many minutes, as many passes
    # as steps timed before training say fit (members share the minutes); 0: off. The run saves
    # the count as its epochs

    def __post_init__(self) -> None:
        check_counts(self, "epochs", "batch_size", "members")
        check_choices(self, "objective", "precision", "stem_init")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.view_size != 0 and self.view_size < 8:
            raise ValueError(f"view_size must be 0 (the image size) or >= 8 pixels, got {self.view_size}")
        if self.train_images < 0 or self.train_images == 1:
            raise ValueError(f"train_images must be 0 (all) or >= 2, got {self.train_images}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        noise = self.noise
        if noise != "auto" and (isinstance(noise, str) or not math.isfinite(noise) or noise < 0):
            raise ValueError(f"noise must be a finite number >= 0 or 'auto', got {self.noise!r}")
        for name in ("weight_decay", "train_minutes"):
            if not math.isfinite(value := getattr(self, name)) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    def resolve(
        self,
        *,
        channels: int = 3,
        objective: str | None = None,
        n_train: int | None = None,
        device_type: str | None = None,
        native_bf16: bool = False,
    ) -> TrainConfig:
        """This config with "auto" replaced: the objective by the kind of image, unless a trainer
        names its own `objective`; the batch size by the objective; the precision by the device
        (`device_type`, and whether it computes bfloat16 natively; left "auto" while the device is
        unknown); the epochs by the number of training images `n_train` (left "auto" while it is
        unknown) and, for the contrastive objectives, by the precision; the noise and the members
        by the objective, the `channels` and, for a single-channel autoencoder, `n_train` (left
        "auto" while it is unknown)."""
        chosen = objective or (AUTO_OBJECTIVE[channels] if self.objective == "auto" else self.objective)
        batch_size = AUTO_BATCH_SIZE[chosen] if self.batch_size == "auto" else self.batch_size
        precision = self.precision
        if precision == "auto" and device_type is not None:
            precision = auto_precision(chosen, device_type, native_bf16)
        epochs = self.epochs
        if epochs == "auto" and n_train is not None and not self.train_minutes:  # else: timed (train.py)
            mixed = chosen != "reconstruction" and precision in ("bfloat16", "float16")
            epochs = auto_epochs(n_train, batch_size, AUTO_EPOCHS_MIXED if mixed else AUTO_EPOCHS, chosen)
        noise = auto_noise(chosen, channels, n_train, batch_size) if self.noise == "auto" else self.noise
        members = auto_members(chosen, channels, n_train) if self.members == "auto" else self.members
        resolved = {"objective": chosen, "batch_size": batch_size, "precision": precision, "epochs": epochs}
        return replace(self, **resolved, noise=noise, members=members)

    def member(self, index: int) -> TrainConfig:
        """Member `index`'s settings in an ensemble: seed + index, one member, its train_minutes share."""
        share = self.train_minutes / self.members if isinstance(self.members, int) else self.train_minutes
        return replace(self, seed=self.seed + index, members=1, train_minutes=share)

    def train_count(self, n_images: int) -> int:
        """How many of `n_images` images this config trains on (the rest, if any, validate)."""
        return split_sizes(n_images, self.val_fraction, self.train_images)[0]


def split_sizes(n: int, val_fraction: float, limit: int = 0) -> tuple[int, int]:
    """(training, validation) image counts: validation gets round(m * val_fraction) of m images,
    m being n, or `limit` when 0 < limit < n; fewer than 4 images are all for training."""
    m = limit if 0 < limit < n else n
    n_val = int(round(m * val_fraction)) if m >= 4 else 0
    return m - n_val, n_val


AUTO_MEMBERS_MIN_TRAIN = split_sizes(50, TrainConfig.val_fraction)[0]  # 45; one under it: umap_floor/small/


def auto_epochs(n_train: int, batch_size: int, base: int, objective: str) -> int:
    """`base` epochs, or more: enough passes over `n_train` images for AUTO_MIN_STEPS steps (at most
    AUTO_MAX_EPOCHS of the `objective`)."""
    steps = max(1, math.ceil(n_train / batch_size))
    return min(AUTO_MAX_EPOCHS[objective], max(base, math.ceil(AUTO_MIN_STEPS / steps)))


def auto_noise(objective: str, channels: int, n_train: int | None, batch_size: int) -> float | str:
    """What noise "auto" trains with (TrainConfig.noise): AUTO_NOISE for a single-channel autoencoder
    on a collection that auto epochs pass over more than AUTO_EPOCHS times, else 0; "auto" while a
    single-channel autoencoder's `n_train` is unknown."""
    if objective != "reconstruction" or channels != 1:
        return 0.0
    if n_train is None:
        return "auto"
    return AUTO_NOISE if auto_epochs(n_train, batch_size, AUTO_EPOCHS, objective) > AUTO_EPOCHS else 0.0


def auto_members(objective: str, channels: int, n_train: int | None) -> int | str:
    """How many autoencoders "auto" trains (TrainConfig.members): AUTO_MEMBERS for a single-channel
    autoencoder on AUTO_MEMBERS_MIN_TRAIN+ training images, else 1; "auto" while `n_train` is unknown."""
    if objective != "reconstruction" or channels != 1:
        return 1
    if n_train is None:
        return "auto"
    return AUTO_MEMBERS if n_train >= AUTO_MEMBERS_MIN_TRAIN else 1


def auto_precision(objective: str, device_type: str, native_bf16: bool) -> str:
    """What precision "auto" trains in (TrainConfig.precision): mixed precision on a GPU; on CPU,
    bfloat16 for the contrastive objectives where the CPU computes it natively, else float32."""
    if device_type == "cuda":
        return "bfloat16" if native_bf16 else "float16"
    if device_type == "cpu" and native_bf16 and objective != "reconstruction":
        return "bfloat16"
    return "float32"


@dataclass(frozen=True, kw_only=True)
class MixtureConfig:
    n_components: int | str = 10  # number of clusters K, or auto: the lowest BIC over k_range
    k_range: tuple[int, int] = (2, 15)  # with n_components auto: the smallest and largest K tried
    covariance_type: str = "full"  # covariance of each mixture component (scikit-learn's names)
    normalize: str = "auto"  # l2: each latent vector (each member's part) scaled to unit length
    # before standardising; both: fits under l2 and under none, one of each kept by
    # candidate_rule, then the more even of the two; auto: both for an autoencoder's single-channel
    # latents under umap, l2 for other umap, else none
    reducer: str = "auto"  # reduction after standardising, before the mixture; auto: umap for 20+
    # images (not a colour autoencoder's latents), else pca
    reduced_dim: int | str = "auto"  # output size of the reducer; auto: 10 with umap, else 20
    n_init: int | str = "auto"  # EM restarts, the best is kept; auto: 20 with umap, else 3
    candidates: int | str = "auto"  # fits of the reduction and mixture, seeds seed, seed+1, ...; one
    # is kept by candidate_rule; auto: 5 with umap, else 1
    candidate_rule: str = "agreement"  # which candidate is kept: agreement (by mean adjusted Rand
    # index with the others) or balance (the most equal cluster sizes, each for its own K: even groups)
    parts: int = 1  # members' vectors side by side in each latent vector (set from members)
    reg_covar: float = 1e-4  # added to covariance diagonals for stability
    max_iter: int = 300  # EM iterations per restart
    seed: int = 0  # seeds the reducer and EM
    max_fit_samples: int = 200_000  # above this many images, fit on a random subsample of this size
    features: str = "auto"  # what the mixture clusters: bottleneck (the latent vector, latent_dim
    # numbers) or pooled (the ResNet trunk's pooled output before the bottleneck, 512 x width
    # numbers); auto: pooled for contrastive and hybrid encoders, bottleneck for reconstruction

    def __post_init__(self) -> None:
        check_choices(self, "features", "covariance_type", "normalize", "candidate_rule", "reducer")
        if self.max_fit_samples < 2:
            raise ValueError(f"max_fit_samples must be >= 2, got {self.max_fit_samples}")
        lo, hi = self.k_range
        if not 1 <= lo <= hi:
            raise ValueError(f"k_range must be (lo, hi) with 1 <= lo <= hi, got {self.k_range}")
        if type(self.parts) is not int or self.parts < 1:
            raise ValueError(f"parts must be a whole number >= 1, got {self.parts!r}")
        check_counts(self, "n_components", "reduced_dim", "n_init", "candidates")

    def resolve(
        self, *, channels: int | None = None, n_images: int = 0, objective: str = "reconstruction", parts=None
    ) -> MixtureConfig:
        """This config with every "auto" replaced by its value for these images and the features
        the `objective` trained (unknown kind of image: pca); `parts`: members per vector (None: kept)."""
        features = resolve_features(self.features, objective)
        reducer = self.reducer
        if reducer == "auto":
            umap = channels == 1 or (channels is not None and objective != "reconstruction")
            reducer = "umap" if umap and n_images >= UMAP_MIN_IMAGES else "pca"
        chosen = {"reducer": reducer, "features": features, "parts": self.parts if parts is None else parts}
        for name, value in AUTO_BY_REDUCER[reducer].items():
            chosen[name] = value if getattr(self, name) == "auto" else getattr(self, name)
        if self.normalize == "auto" and reducer == "umap" and channels == 1 and objective == "reconstruction":
            chosen["normalize"] = "both"
        return replace(self, **chosen)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)

    def __post_init__(self) -> None:
        view, side = self.train.view_size, self.model.image_size
        if view and not self.model.downsampling <= view <= side:
            raise ValueError(
                f"view_size must be 0 or between {self.model.downsampling} (the {self.model.stem} stem's "
                f"downsampling) and {side} (the image size), got {view}"
            )
        if self.train.objective == "hybrid":
            check_hybrid_views(view, side)

    @property
    def feature_dim(self) -> int:
        """Numbers per image that the mixture clusters (the features and members resolved)."""
        members = self.train.members if isinstance(self.train.members, int) else 1
        return self.model.feature_dim(self.mixture.features) * members

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RunConfig:
        parts = {}
        for f, kind in (("model", ModelConfig), ("train", TrainConfig), ("mixture", MixtureConfig)):
            parts[f] = build_config(kind, saved.get(f, {}))
        if "mixture" in saved and "features" not in saved["mixture"]:
            # saved before the setting existed: every mixture then clustered the bottleneck
            parts["mixture"] = replace(parts["mixture"], features="bottleneck")
        if "model" in saved and "latent_dim" not in saved["model"]:
            parts["model"] = replace(parts["model"], latent_dim=AUTO_LATENT_DIM)  # saved before "auto"
        if "train" in saved and "members" not in saved["train"]:
            parts["train"] = replace(parts["train"], members=1)  # saved before ensembles: one network
        if "parts" not in saved.get("mixture", {"parts": 1}) and parts["train"].members != 1:
            # saved when the ensemble scaled each member to unit length itself: the mixture does it now
            parts["mixture"] = replace(parts["mixture"], parts=parts["train"].members, normalize="l2")
        return cls(**parts)


def resolve_features(features: str, objective: str) -> str:
    """What `MixtureConfig.features` becomes for an encoder trained with `objective`."""
    return AUTO_FEATURES[objective] if features == "auto" else features


def check_hybrid_views(view: int | None, side: int) -> None:
    """The hybrid objective reconstructs its views: a view (None or 0: the image size) must be `side`."""
    if view not in (None, 0, side):
        raise ValueError(
            f"the hybrid objective reconstructs its views, so view_size must be 0 or {side} (the "
            f"image size), got {view}: use --objective contrastive for smaller views"
        )


def build_config(kind: type, saved: dict[str, Any]):
    """Rebuild a config dataclass from a saved dict; unknown keys are an error."""
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} settings {unknown}; expected some of {sorted(known)}")
    values = dict(saved)
    if "k_range" in values:
        values["k_range"] = tuple(values["k_range"])
    return kind(**values)
