"""Contrastive training of the autoencoder's encoder (SimCLR's NT-Xent), a drop-in for train_autoencoder.

Two random views of every image pass through the encoder and a small projection head; NT-Xent
pulls the two views of an image together and pushes the other 2B - 2 views of the batch away.
The head serves the loss only: the returned model is the plain `AutoEncoder`, so the pipeline can
swap objectives. In mode "simclr" its decoder is left as initialised (reconstructions are
meaningless); in mode "hybrid" the decoder learns to reconstruct the views with MSE, from the
bottleneck detached (default: features stay contrastive) or not (`shared_gradients=True`).

Which features to cluster (`MixtureConfig.features`): "pooled" (the ResNet trunk's pooled output,
512 x width numbers, `Encoder.pooled`), the default for these encoders, or "bottleneck" (the
linear layer after it, latent_dim numbers); benchmarks/results/features/NOTES.md measures both.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.amp import GradScaler

from . import distributed
from .augment import AugmentPolicy, augment, check_policy, default_policy
from .budget import seconds_per_epoch, training_copies, within_budget
from .checkpoint import has_checkpoint, kept_checkpoint, load_checkpoint, save_checkpoint
from .config import FEATURES, ModelConfig, TrainConfig, check_choices, check_hybrid_views
from .nn import AutoEncoder
from .nn.whitening import whiten_conv
from .precision import Precision, autocast
from .preprocess import Normalizer
from .progress import bar
from .storage import write_json
from .train import EpochLoop, Session, epoch_batches, evaluating_on

OPTIONS_FILE = "contrastive.json"  # the contrastive settings of a checkpoint, checked on resume
BEFORE_FIELD = {"stem_init": "random"}  # what a checkpoint written before a setting existed did
# the whitening filters come from the views of up to WHITENING_IMAGES training images, fewer for
# views larger than 32 pixels (as many view pixels as 2,000 views of 32 x 32: memory stays ~0.2 GB)
WHITENING_IMAGES, WHITENING_PIXELS = 2000, 2000 * 32 * 32
WHITENING_SEED = 12345  # the views' own generator: the run's other random numbers stay as they were
MODES = ("simclr", "hybrid")


@dataclass(frozen=True)
class ContrastiveConfig:
    mode: str = "simclr"  # "simclr": NT-Xent only; "hybrid": plus the decoder's MSE on the views
    temperature: float = 0.2  # NT-Xent's softmax temperature
    projection_dim: int = 64  # output size of the projection head
    hidden_dim: int = 256  # hidden size of the projection head
    schedule: str = "cosine"  # learning rate per step: "cosine" (to 0 at the last epoch) or "constant"
    shared_gradients: bool = False  # hybrid: let the MSE reach the encoder (False: decoder on detached z)
    reconstruction_weight: float = 1.0  # hybrid: weight of the MSE next to NT-Xent
    policy: AugmentPolicy | None = None  # the views; None: default_policy(channels)
    view_size: int = 0  # side of the views in pixels, overriding the policy's size (0: keep it)
    stem_init: str = "random"  # the first convolution's start: random, whiten, whiten-fixed (TrainConfig)

    @property
    def objective(self) -> str:
        """The TrainConfig objective this mode trains: contrastive (simclr) or hybrid."""
        return "contrastive" if self.mode == "simclr" else "hybrid"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_choices(self, "stem_init")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.projection_dim < 1 or self.hidden_dim < 1:
            raise ValueError(
                f"projection_dim and hidden_dim must be >= 1, got {self.projection_dim}, {self.hidden_dim}"
            )


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent: mean over the 2B views of -log softmax of the positive among 2B - 1 others.

    z1[i] and z2[i] (B, D) are projections of two views of image i; they are L2-normalised here.
    """
    if z1.shape != z2.shape or z1.ndim != 2 or len(z1) < 2:
        raise ValueError(f"expected two (B, D) batches with B >= 2 of one shape, got {z1.shape}, {z2.shape}")
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
    logits = z @ z.T / temperature  # (2B, 2B) cosine similarities
    logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = len(z1)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, positives)


class ProjectionHead(nn.Module):
    """SimCLR's MLP g(.) on the bottleneck: Linear, BatchNorm, ReLU, Linear. Only the loss sees it."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (B, out_dim)


class ContrastiveModel(nn.Module):
    """The autoencoder plus the head: what is trained and checkpointed; `autoencoder` is returned."""

    def __init__(self, model_config: ModelConfig, options: ContrastiveConfig) -> None:
        super().__init__()
        model_config = model_config.resolve(options.objective)
        self.autoencoder = AutoEncoder(model_config)
        self.head = ProjectionHead(model_config.latent_dim, options.hidden_dim, options.projection_dim)
        self.options = options

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(projections (B, projection_dim), reconstructions (B, C, H, W) in hybrid mode, else None)."""
        z = self.autoencoder.encoder(x)  # (B, latent_dim)
        projections = self.head(z)
        if self.options.mode != "hybrid":
            return projections, None
        return projections, self.autoencoder.decoder(z if self.options.shared_gradients else z.detach())


@torch.inference_mode()
def encode_features(
    model: AutoEncoder,
    images: np.ndarray,
    normalizer: Normalizer,
    kinds: tuple[str, ...] = FEATURES,
    *,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """float32 features of uint8 (N, H, W, C) images in eval mode, one array per kind, in one pass."""
    parts: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    with evaluating_on(model, device) as net:
        on = next(net.parameters()).device
        for start in range(0, len(images), batch_size):
            x = normalizer.to_tensor(images[start : start + batch_size], on)
            h = net.encoder.pooled(x)
            out = {"pooled": h, "bottleneck": net.encoder.bottleneck(h)}
            for kind in kinds:
                parts[kind].append(out[kind].float().cpu().numpy())
    return {kind: np.concatenate(p) if p else np.zeros((0, 0), np.float32) for kind, p in parts.items()}


def train_contrastive(
    images: np.ndarray,
    model_config: ModelConfig,
    train_config: TrainConfig,
    normalizer: Normalizer,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, AutoEncoder, list[dict]], None] | None = None,
    **options,
) -> tuple[AutoEncoder, list[dict]]:
    """Train on uint8 (N, H, W, C) images with NT-Xent; the model (eval mode, on CPU) and its history.

    ``options`` are ContrastiveConfig's fields. TrainConfig.flip and noise are not used: the
    views come from the augmentation policy. val_loss is the NT-Xent of the validation images
    (fixed views); hybrid runs also record train_contrastive and train_reconstruction. The cosine
    schedule spans TrainConfig.epochs: a run resumed with the same epochs continues exactly; one
    resumed with more epochs continues on the longer schedule. ``on_epoch(epoch, autoencoder,
    history)`` runs after each epoch's checkpoint (benchmarks score features there; no training).
    """
    config = ContrastiveConfig(**options)
    policy = config.policy or default_policy(model_config.channels)
    if config.view_size:
        policy = replace(policy, size=config.view_size)
    check_policy(policy, model_config.channels)
    if config.mode == "hybrid":
        check_hybrid_views(policy.size, model_config.image_size)
    if distributed.launched_by_torchrun():
        raise ValueError(
            "contrastive training runs in one process (NT-Xent here uses the local batch only), got "
            "a torchrun launch; train colour images there with --objective reconstruction"
        )
    objective = config.objective
    model_config = model_config.resolve(objective)
    build = partial(ContrastiveModel, model_config, config)
    s = Session.start(images, train_config, objective, build, checkpoint_dir, progress)
    model = s.model.to(memory_format=torch.channels_last)  # with channels-last views: see _Run.views
    time_epoch = partial(_epoch_seconds, s, images, normalizer, config, policy)
    s.train_config = within_budget(s.train_config, time_epoch, checkpoint_dir, resume, progress)
    train_config = s.train_config  # "auto" settings resolved
    start, history = _resume(
        checkpoint_dir, resume, model, s.optimizer, config, policy, s.saved(model_config)
    )
    if config.stem_init != "random":
        views = partial(_whitening_views, images, s.train_idx, normalizer, policy, model_config, s.device)
        _whiten_stem(model, config.stem_init, views if start == 0 else None)  # resumed: in the checkpoint
    run = _Run(
        model, s.optimizer, s.scaler, normalizer, train_config, config, policy, s.device, s.plan, progress
    )

    def validate() -> float | None:
        return run.validation_loss(images[s.val_idx]) if len(s.val_idx) >= 2 else None

    def save(epoch: int, history: list[dict]) -> None:
        if checkpoint_dir is not None:
            _write_options(Path(checkpoint_dir), config, policy)  # first: a checkpoint never lacks them
            save_checkpoint(checkpoint_dir, model, s.optimizer, epoch, history, *s.saved(model_config))
        if on_epoch is not None:
            on_epoch(epoch, model.autoencoder, history)

    loop = EpochLoop(train_config.epochs, len(s.train_idx), progress)
    history = loop.run(
        start, history, lambda epoch: run.train_epoch(images, s.train_idx, epoch), validate, save
    )
    return model.autoencoder.to("cpu", memory_format=torch.contiguous_format).eval(), history


def _whitening_views(images, train_idx, normalizer, policy, model_config: ModelConfig, device) -> Tensor:
    """One view of each of the first training images (WHITENING_IMAGES, fewer for large views),
    drawn from a generator of its own."""
    side = policy.size or model_config.image_size
    count = max(1, min(WHITENING_IMAGES, WHITENING_PIXELS // side**2))
    x = normalizer.to_tensor(images[np.sort(train_idx[:count])], device)
    generator = torch.Generator().manual_seed(WHITENING_SEED)  # on the CPU, as the epochs' generators
    return augment(x, policy, normalizer, generator)


def _whiten_stem(model: ContrastiveModel, stem_init: str, views: Callable[[], Tensor] | None) -> None:
    """Start the stem's convolution as the whitening filters of ``views()`` (None: keep the weights,
    a resumed run's); "whiten-fixed" keeps it out of training."""
    stem = model.autoencoder.encoder.stem[0]
    if views is not None:
        whiten_conv(stem, views())
    stem.weight.requires_grad_(stem_init != "whiten-fixed")


def _epoch_seconds(s: Session, images, normalizer, config: ContrastiveConfig, policy: AugmentPolicy) -> float:
    """A contrastive epoch's seconds (budget.seconds_per_epoch), timed on copies of the session's."""
    train = replace(s.train_config, epochs=1)
    run = _Run(
        *training_copies(s.model, s.optimizer, s.scaler),
        normalizer,
        train,
        config,
        policy,
        s.device,
        s.plan,
        False,
    )
    return seconds_per_epoch(
        lambda positions: run.train_epoch(images, positions, 1),
        lambda positions: run.validation_loss(images[positions]),
        s.train_idx,
        s.val_idx,
        train.batch_size,
    )


def _resume(folder, resume, model, optimizer, config, policy, saved) -> tuple[int, list[dict]]:
    """(last complete epoch, history) of the checkpoint in ``folder``, or (0, []) for a fresh run."""
    if not (resume and folder is not None and has_checkpoint(folder)):
        return 0, []
    _check_options(Path(folder), config, policy)
    return load_checkpoint(folder, model, optimizer, *saved)


def _options_record(config: ContrastiveConfig, policy: AugmentPolicy) -> dict:
    return json.loads(json.dumps(asdict(config) | {"policy": asdict(policy)}))  # tuples as lists


def _write_options(folder: Path, config: ContrastiveConfig, policy: AugmentPolicy) -> None:
    write_json(folder / OPTIONS_FILE, _options_record(config, policy))  # atomic; creates the folder


def _check_options(folder: Path, config: ContrastiveConfig, policy: AugmentPolicy) -> None:
    path = folder / OPTIONS_FILE
    saved = json.loads(path.read_text()) if path.is_file() else None
    if saved is not None and isinstance(saved.get("policy"), dict):  # fields added since: their defaults
        defaults = json.loads(json.dumps({f.name: f.default for f in fields(AugmentPolicy)}))
        saved["policy"] = defaults | saved["policy"]
    if saved is not None:
        saved = BEFORE_FIELD | saved
    now = _options_record(config, policy)
    if saved != now:
        changed = sorted(k for k in now if saved is None or saved.get(k) != now[k])
        raise ValueError(f"cannot resume from {folder}: contrastive settings changed: {changed}")


@dataclass
class _Run:
    """One training run's moving parts, so the epoch and validation steps stay short."""

    model: ContrastiveModel
    optimizer: torch.optim.Optimizer
    scaler: GradScaler
    normalizer: Normalizer
    train: TrainConfig
    options: ContrastiveConfig
    policy: AugmentPolicy
    device: torch.device
    plan: Precision
    progress: bool

    def views(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Two views of each image, stacked: (2B, C, h, w), first views then second views.

        Channels-last, as the model: the training steps ran 1.47x faster so on 2 CPU cores
        (benchmarks/results/profile_contrastive/profile.md, bare steps 195 vs 133 images/s).
        """
        views = torch.cat([augment(x, self.policy, self.normalizer, g) for g in (generator, generator)])
        return views.contiguous(memory_format=torch.channels_last)

    def losses(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        views = self.views(x, generator)
        with autocast(self.device, self.plan):
            projections, reconstructions = self.model(views)
        n = len(x)
        out = {
            "contrastive": nt_xent(projections[:n].float(), projections[n:].float(), self.options.temperature)
        }
        if reconstructions is not None:
            out["reconstruction"] = F.mse_loss(reconstructions.float(), views)
        return out

    def total(self, parts: dict[str, Tensor]) -> Tensor:
        return parts["contrastive"] + self.options.reconstruction_weight * parts.get("reconstruction", 0.0)

    def train_epoch(self, images: np.ndarray, train_idx: np.ndarray, epoch: int) -> dict[str, float]:
        self.model.train()
        generator = torch.Generator().manual_seed(self.train.seed * 100_003 + epoch * 7919)
        batches = epoch_batches(len(train_idx), self.train, epoch, rank=0, world=1)
        shown = bar(batches, enabled=self.progress, desc=f"epoch {epoch}/{self.train.epochs}")
        sums: dict[str, float] = {}
        count, t0 = 0, time.perf_counter()
        for step, batch in enumerate(shown):
            self._set_lr(epoch, step, len(batches))
            x = self.normalizer.to_tensor(images[np.sort(train_idx[batch])], self.device)
            parts = self.losses(x, generator)
            loss = self.total(parts)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"training diverged: the loss became {value} in epoch {epoch} (batch {step + 1}); "
                    f"{kept_checkpoint(epoch)}; try a lower learning rate (--lr)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for key, part in {"train_loss": loss, **parts}.items():
                sums[key] = sums.get(key, 0.0) + float(part.detach()) * len(batch)
            count += len(batch)
            shown.set_postfix(
                loss=f"{sums['train_loss'] / count:.4f}", img_s=f"{count / (time.perf_counter() - t0):.0f}"
            )
        means = {k: v / max(count, 1) for k, v in sums.items()}
        if "reconstruction" not in means:  # simclr: the total is the NT-Xent
            return {"train_loss": means["train_loss"]}
        return {
            "train_loss": means["train_loss"],
            **{f"train_{k}": means[k] for k in ("contrastive", "reconstruction")},
        }

    def _set_lr(self, epoch: int, step: int, steps: int) -> None:
        lr = self.train.lr
        if self.options.schedule == "cosine":
            done = ((epoch - 1) * steps + step) / max(self.train.epochs * steps, 1)
            lr = 0.5 * lr * (1 + math.cos(math.pi * done))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @torch.inference_mode()
    def validation_loss(self, images: np.ndarray, batch_size: int = 256) -> float:
        """NT-Xent of the validation images in eval mode, on views of a fixed seed (same every epoch)."""
        self.model.eval()
        generator = torch.Generator().manual_seed(self.train.seed * 100_003 + 12_345)
        total, count = 0.0, 0
        for start in range(0, len(images), batch_size):
            x = self.normalizer.to_tensor(images[start : start + batch_size], self.device)
            if len(x) < 2:
                continue
            value = float(self.losses(x, generator)["contrastive"])
            total, count = total + value * len(x), count + len(x)
        return total / max(count, 1)
