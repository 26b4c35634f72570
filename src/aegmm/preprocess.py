"""Preprocessing: uint8 images to normalised float tensors, batch by batch, and back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Normalizer:
    """Per-channel mean and std of the training images, in [0, 1] pixel units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, images: np.ndarray, chunk: int = 8192) -> Normalizer:
        """Statistics of uint8 (N, H, W, C) images, computed in chunks (no float copy of all)."""
        channels = images.shape[-1]
        total = np.zeros(channels)
        total_sq = np.zeros(channels)
        for start in range(0, len(images), chunk):
            block = images[start : start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
            total += block.sum(axis=0)
            total_sq += (block**2).sum(axis=0)
        count = images.size / channels
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        std = np.where(std < 1e-3, 1.0, std)  # constant channels are left unscaled
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def _stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return mean, std

    def to_tensor(self, images: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
        """uint8 (B, H, W, C) -> normalised float32 (B, C, H, W) on `device`."""
        x = torch.from_numpy(np.require(images, requirements=["C", "W"])).to(device, non_blocking=True)
        # contiguous NCHW: a permuted view would run channels-last kernels, and oneDNN's backward
        # pass crashed (double free) on those with torch 2.14.1 on this project's CPU machine
        x = x.permute(0, 3, 1, 2).float().contiguous().div_(255.0)
        mean, std = self._stats(x.device)
        return (x - mean) / std

    def to_pixels(self, x: Tensor) -> Tensor:
        """Normalised (B, C, H, W) -> [0, 1] pixel values (B, C, H, W), clipped."""
        mean, std = self._stats(x.device)
        return (x.float() * std + mean).clamp_(0.0, 1.0)
