"""Training the autoencoder (MSE, Adam), with history, checkpoints, resume; and encoding."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.amp import GradScaler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from . import distributed
from .budget import seconds_per_epoch, training_copies, within_budget
from .checkpoint import data_fingerprint, has_checkpoint, kept_checkpoint, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig, split_sizes
from .nn import AutoEncoder
from .precision import Precision, autocast, device_precision, resolve_on_device
from .preprocess import Normalizer
from .progress import bar, say


def split_indices(n: int, val_fraction: float, seed: int, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, validation) positions, of the sizes `split_sizes` gives.

    Both parts come from all n images, or from a random `limit` of them when 0 < limit < n (the
    autoencoder of a very large collection does not need to see every image).
    """
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = split_sizes(n, val_fraction, limit)
    order = order[: n_train + n_val]
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_autoencoder(
    images: np.ndarray,
    model_config: ModelConfig,
    train_config: TrainConfig,
    normalizer: Normalizer,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[AutoEncoder, list[dict]]:
    """Train on uint8 (N, H, W, C) images; returns the model (eval mode, on CPU) and its history."""
    model_config = model_config.resolve("reconstruction")
    build = partial(AutoEncoder, model_config)
    s = Session.start(images, train_config, "reconstruction", build, checkpoint_dir, progress)
    distributed.init(s.device)
    if s.device.type == "cuda":  # channels-last convolutions are faster on GPUs
        s.model.to(memory_format=torch.channels_last)
    time_epoch = partial(_epoch_seconds, s, images, normalizer)
    s.train_config = within_budget(s.train_config, time_epoch, checkpoint_dir, resume, progress)
    train_config = s.train_config  # "auto" settings resolved
    start, history = 0, []
    if resume and checkpoint_dir is not None and has_checkpoint(checkpoint_dir):
        start, history = load_checkpoint(checkpoint_dir, s.model, s.optimizer, *s.saved(model_config))
    net = _wrap(s.model, s.device)

    def train_epoch(epoch: int) -> dict[str, float]:
        args = (s.optimizer, s.scaler, images, s.train_idx, normalizer, train_config, epoch, s.device, s.plan)
        return {"train_loss": _train_epoch(net, *args, progress)}

    def validate() -> float | None:
        return _mean_loss(s.model, images[s.val_idx], normalizer, s.device) if len(s.val_idx) else None

    def save(epoch: int, history: list[dict]) -> None:
        if checkpoint_dir is not None and distributed.is_main():
            save_checkpoint(checkpoint_dir, s.model, s.optimizer, epoch, history, *s.saved(model_config))
        distributed.barrier()

    loop = EpochLoop(train_config.epochs, len(s.train_idx), progress and distributed.is_main())
    history = loop.run(start, history, train_epoch, validate, save)
    return s.model.to("cpu").eval(), history


@dataclass
class Session:
    """What training with any objective starts from: device, precision, model, optimizer, split."""

    device: torch.device
    plan: Precision
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: GradScaler
    train_config: TrainConfig
    fingerprint: dict | None  # the images' checkpoint fingerprint (None without checkpoints)
    train_idx: np.ndarray
    val_idx: np.ndarray

    @classmethod
    def start(
        cls,
        images,
        config: TrainConfig,
        objective: str,
        build: Callable[[], nn.Module],
        checkpoint_dir,
        progress: bool = False,
    ) -> Session:
        """The session of a trainer of `objective`, with `config`'s "auto" settings resolved."""
        automatic = config.precision == "auto"
        config, device = resolve_on_device(
            config, channels=images.shape[-1], objective=objective, n_train=config.train_count(len(images))
        )
        plan = device_precision(config, device)  # an impossible precision fails before any work
        if automatic and device.type == "cpu" and plan.dtype is not None:
            say(
                "training in bfloat16 autocast: this CPU has bfloat16 instructions "
                "(--precision float32 to opt out)",
                enabled=progress and distributed.is_main(),
            )
        torch.manual_seed(config.seed)
        model = build().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scaler = GradScaler(device.type, enabled=plan.scale_loss)
        fingerprint = data_fingerprint(images) if checkpoint_dir is not None else None
        train_idx, val_idx = split_indices(len(images), config.val_fraction, config.seed, config.train_images)
        if len(train_idx) < 2:
            raise ValueError(
                f"training needs at least 2 images after the validation split, got {len(train_idx)}"
            )
        return cls(device, plan, model, optimizer, scaler, config, fingerprint, train_idx, val_idx)

    def saved(self, model_config: ModelConfig) -> tuple:
        """The last arguments of save_checkpoint and load_checkpoint: what a checkpoint must match."""
        return model_config, self.train_config, self.scaler, self.fingerprint


@dataclass(frozen=True)
class EpochLoop:
    """The epochs of any objective: time, divergence check, one line per epoch, history, checkpoint."""

    epochs: int
    n_train: int  # training images per epoch (for images/s)
    progress: bool

    def run(
        self,
        start: int,
        history: list[dict],
        train_epoch: Callable[[int], dict[str, float]],  # epoch -> {"train_loss": ..., other losses}
        validate: Callable[[], float | None],  # the validation loss; None without validation images
        save: Callable[[int, list[dict]], None],  # after each epoch: the checkpoint
    ) -> list[dict]:
        for epoch in range(start + 1, self.epochs + 1):
            t0 = time.perf_counter()
            losses = train_epoch(epoch)
            val = validate()
            if not math.isfinite(losses["train_loss"]) or (val is not None and not math.isfinite(val)):
                raise FloatingPointError(
                    f"training diverged in epoch {epoch}: the losses became {losses}, validation {val}; "
                    f"{kept_checkpoint(epoch)}; try a lower learning rate (--lr)"
                )
            val = math.nan if val is None else val
            seconds = time.perf_counter() - t0
            say(
                f"epoch {epoch}/{self.epochs}: train loss {losses['train_loss']:.4g}, validation loss "
                f"{val:.4g}, {seconds:.1f} s ({self.n_train / seconds:,.0f} images/s)",
                enabled=self.progress,
            )
            entry = {
                "epoch": epoch,
                "train_loss": losses.pop("train_loss"),
                "val_loss": val,
                "seconds": seconds,
            }
            history.append(entry | {"images_per_second": self.n_train / seconds} | losses)
            save(epoch, history)
        return history


def _epoch_seconds(s: Session, images: np.ndarray, normalizer: Normalizer) -> float:
    """An autoencoder epoch's seconds (budget.seconds_per_epoch), timed on copies of the session's."""
    net, optimizer, scaler = training_copies(s.model, s.optimizer, s.scaler)
    config = replace(s.train_config, epochs=1)

    def step(positions: np.ndarray) -> None:
        _train_epoch(
            net, optimizer, scaler, images, positions, normalizer, config, 1, s.device, s.plan, False
        )

    def validate(positions: np.ndarray) -> None:
        _mean_loss(net, images[positions], normalizer, s.device)

    return seconds_per_epoch(step, validate, s.train_idx, s.val_idx, config.batch_size)


def _wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if distributed.world_size() == 1:
        return model
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def epoch_batches(
    n: int, config: TrainConfig, epoch: int, rank: int | None = None, world: int | None = None
) -> list[np.ndarray]:
    """A process's batches for an epoch: a DistributedSampler shard, split by the local batch."""
    rank = distributed.rank() if rank is None else rank
    world = distributed.world_size() if world is None else world
    sampler = DistributedSampler(
        range(n), num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    order = np.fromiter(sampler, dtype=np.int64)
    distributed.log_shard(epoch, order)
    local = max(1, config.batch_size // world)
    batches = [order[i : i + local] for i in range(0, len(order), local)]
    return [b for b in batches if len(b) > 1]  # batch norm needs two images


def _train_epoch(
    net, optimizer, scaler, images, train_idx, normalizer, config, epoch, device, plan, progress
) -> float:
    net.train()
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch * 7919 + distributed.rank())
    batches = epoch_batches(len(train_idx), config, epoch)
    shown = bar(batches, enabled=progress and distributed.is_main(), desc=f"epoch {epoch}/{config.epochs}")
    total, count, t0 = 0.0, 0, time.perf_counter()
    for step, batch in enumerate(shown):
        target = normalizer.to_tensor(images[np.sort(train_idx[batch])], device)
        if device.type == "cuda":
            target = target.contiguous(memory_format=torch.channels_last)
        inputs = _augment(target, config, generator)
        with autocast(device, plan):
            output, _ = net(inputs)
            loss = nn.functional.mse_loss(output.float(), target)
        value = distributed.mean_over_processes(loss.detach())  # every process stops together
        if not math.isfinite(value):
            raise FloatingPointError(
                f"training diverged: the loss became {value} in epoch {epoch} (batch {step + 1}); "
                f"{kept_checkpoint(epoch)}; try a lower learning rate (--lr)"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # a disabled scaler (float32, bfloat16) passes the loss through
        scaler.step(optimizer)
        scaler.update()
        total, count = total + value * len(batch), count + len(batch)
        rate = count * distributed.world_size() / (time.perf_counter() - t0)
        shown.set_postfix(loss=f"{total / count:.4f}", img_s=f"{rate:.0f}")
    return total / max(count, 1)


def _augment(x: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    if config.flip:
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if config.noise > 0:
        x = x + config.noise * torch.randn(x.shape, generator=generator).to(x.device)
    return x


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


@contextlib.contextmanager
def evaluating_on(model: nn.Module, device: str | torch.device) -> Iterator[nn.Module]:
    """The model in eval mode on ``device``, leaving the caller's model where and as it was.

    A model that lives on another device is copied there (the fitted model is never moved in
    place); one already there is used as it is, and its training flag is restored afterwards.
    """
    device = distributed.resolve_device(device)
    if not _same_device(next(model.parameters()).device, device):
        model = copy.deepcopy(model).to(device)
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


@torch.inference_mode()
def _mean_loss(
    model: AutoEncoder, images: np.ndarray, normalizer: Normalizer, device, batch: int = 128
) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch):
        x = normalizer.to_tensor(images[start : start + batch], device)
        output, _ = model(x)
        total += float(nn.functional.mse_loss(output.float(), x, reduction="sum")) / x[0].numel()
    return total / len(images)


def _batches(model, images, normalizer, device, batch_size, progress=False) -> Iterator:
    """(start, model in eval mode on ``device``, normalised batch there) over the images."""
    with evaluating_on(model, device) as net:
        on = next(net.parameters()).device
        starts = range(0, len(images), batch_size)
        for start in bar(starts, enabled=progress, desc="encoding", unit="batch"):
            yield start, net, normalizer.to_tensor(images[start : start + batch_size], on)


@torch.inference_mode()
def encode(
    model: AutoEncoder,
    images: np.ndarray,
    normalizer: Normalizer,
    *,
    batch_size: int = 128,
    device: str = "cpu",
    progress: bool = False,
    out: str | Path | None = None,
    features: str = "bottleneck",
) -> np.ndarray:
    """float32 features (N, feature_dim) of uint8 images, in eval mode: the latent vectors
    ("bottleneck", latent_dim numbers) or the trunk's pooled output ("pooled", 512 x width).

    With `out` (a .npy path) they are written chunk by chunk to a memory-mapped file instead
    of memory, and that memory map is returned.
    """
    shape = (len(images), model.feature_dim(features))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    else:
        out = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=shape)
    for start, net, x in _batches(model, images, normalizer, device, batch_size, progress=progress):
        out[start : start + len(x)] = net.encoder.features(x, features)[0].float().cpu().numpy()
    return out


@torch.inference_mode()
def encode_and_reconstruct(
    model: AutoEncoder,
    images: np.ndarray,
    normalizer: Normalizer,
    *,
    batch_size: int = 128,
    device: str = "cpu",
    features: str = "bottleneck",
) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 (N, feature_dim; see `encode`) and reconstructions float32 (N, H, W, C)
    in [0, 1], from one pass of each batch through the encoder and the decoder."""
    latents, pixels = [], []
    for _, net, x in _batches(model, images, normalizer, device, batch_size):
        h, z = net.encoder.features(x, features)
        latents.append(h.float().cpu().numpy())
        pixels.append(normalizer.to_pixels(net.decoder(z)).permute(0, 2, 3, 1).cpu().numpy())
    if not latents:
        return np.zeros((0, model.feature_dim(features)), np.float32), np.zeros(
            (0, *images.shape[1:]), np.float32
        )
    return np.concatenate(latents), np.concatenate(pixels)
