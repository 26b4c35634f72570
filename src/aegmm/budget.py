"""--train-minutes: how many epochs fit in a training time budget, timed before training starts.

A trainer hands over a function that times its own steps on throwaway copies of the model, the
optimizer and the loss scaler, so the run that follows is the same, bit for bit, as one given
that number of epochs (`--epochs N`). A resumed run keeps the epochs of its checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.amp import GradScaler

from . import distributed
from .checkpoint import has_checkpoint, saved_epochs
from .config import TrainConfig
from .progress import say

TIMED_STEPS = 3  # training steps timed after one that warms up (kernel choice, allocations)


def training_copies(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: GradScaler
) -> tuple[nn.Module, torch.optim.Optimizer, GradScaler]:
    """Copies to time steps on: the model as it is, a fresh optimizer of the same kind and settings."""
    twin = copy.deepcopy(model)
    device = next(model.parameters()).device.type
    return (
        twin,
        type(optimizer)(twin.parameters(), **optimizer.defaults),
        GradScaler(device, enabled=scaler.is_enabled()),
    )


def seconds_per_epoch(
    step: Callable[[np.ndarray], object],
    validate: Callable[[np.ndarray], object] | None,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    batch_size: int,
) -> float:
    """An epoch's seconds: `step(positions)` trains one batch of those images (timed TIMED_STEPS
    times after a warm-up), `validate(positions)` measures a batch of validation images (scaled up
    to all of them)."""
    batch = train_idx[:batch_size]
    step(batch)
    _wait_for_gpu()
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        step(batch)
    _wait_for_gpu()
    seconds = (time.perf_counter() - start) / TIMED_STEPS * math.ceil(len(train_idx) / batch_size)
    if validate is not None and len(val_idx) >= 2:
        part = val_idx[:batch_size]
        start = time.perf_counter()
        validate(part)
        _wait_for_gpu()
        seconds += (time.perf_counter() - start) * len(val_idx) / len(part)
    return seconds


def _wait_for_gpu() -> None:
    """CUDA runs asynchronously: a clock read after queued work needs it finished first."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def epochs_within(minutes: float, spent: float, epoch_seconds: float) -> int:
    """How many epochs of `epoch_seconds` fit in `minutes`, `spent` seconds of them gone (at least 1)."""
    return max(1, int((minutes * 60 - spent) // max(epoch_seconds, 1e-9)))


def within_budget(
    config: TrainConfig,
    time_epoch: Callable[[], float],
    checkpoint_dir: Path | None,
    resume: bool,
    progress: bool,
) -> TrainConfig:
    """`config` with its epochs set where they are "auto" under train_minutes: those of the
    checkpoint being resumed, else as many as fit by `time_epoch()` (an epoch's seconds), agreed
    over processes. Any other config comes back as it is."""
    if config.epochs != "auto" or not config.train_minutes:
        return config
    if resume and checkpoint_dir is not None and has_checkpoint(checkpoint_dir):
        return replace(config, epochs=saved_epochs(checkpoint_dir))
    start = time.perf_counter()
    seconds = time_epoch()
    epochs = epochs_within(config.train_minutes, time.perf_counter() - start, seconds)
    epochs = int(distributed.mean_over_processes(torch.tensor(float(epochs))))
    say(
        f"--train-minutes {config.train_minutes:g}: an epoch takes about {seconds:.1f} s here, "
        f"so {epochs} epoch{'s' if epochs != 1 else ''}",
        enabled=progress and distributed.is_main(),
    )
    return replace(config, epochs=epochs)
