"""Preprocessing: pixels of any size and channel count -> the model's images -> float tensors.

One resize (``resize``, bilinear) serves decoded files and arrays alike; ``conform_images`` gives
any uint8 batch the model's size and channels; ``Normalizer`` turns uint8 batches into normalised
tensors and back. Only ``Normalizer`` needs torch, and it imports it when first used, so loading
and packing images never wait for torch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch
    from torch import Tensor

RESAMPLING = Image.Resampling.BILINEAR
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


def resize(image: np.ndarray | Image.Image, height: int, width: int) -> np.ndarray | Image.Image:
    """``image`` resized (bilinear) to height x width: a uint8 (H, W, C) array or a PIL image, as given."""
    if isinstance(image, Image.Image):
        return image.resize((width, height), RESAMPLING, reducing_gap=3.0)
    img = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
    out = np.asarray(resize(img, height, width), dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def match_channels(array: np.ndarray, channels: int | None) -> np.ndarray:
    """Convert uint8 (H, W, C) between 1 and 3 channels (luma for RGB -> gray)."""
    have = array.shape[-1]
    if channels is None or have == channels:
        return array
    if channels == 3 and have == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 1 and have == 3:
        luma = array.astype(np.float32) @ np.array(LUMA, dtype=np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, :, None]
    raise ValueError(f"cannot convert {have} channels to {channels}")


def stack_images(arrays: list[np.ndarray], channels: int | None) -> np.ndarray:
    """Decoded images as one uint8 (N, H, W, C) batch of the most common size.

    ``channels`` None gives 3 when any image is colour, else 1.
    """
    if channels is None:
        channels = 3 if any(a.shape[-1] == 3 for a in arrays) else 1
    arrays = [match_channels(a, channels) for a in arrays]
    shapes = Counter(a.shape for a in arrays)
    if len(shapes) > 1:
        (height, width, _), _ = shapes.most_common(1)[0]
        arrays = [a if a.shape[:2] == (height, width) else resize(a, height, width) for a in arrays]
    return np.stack(arrays)


def conform_images(images: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> (N, image_size, image_size, channels); None keeps that property."""
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0-255), got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"images must have shape (N, H, W) or (N, H, W, C) with C in 1, 3, 4, got {images.shape}"
        )
    if images.shape[-1] == 4:
        images = images[..., :3]
    if channels is not None and images.shape[-1] != channels:
        images = np.stack([match_channels(a, channels) for a in images])
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
        images = np.stack([resize(a, image_size, image_size) for a in images])
    return images


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
        import torch

        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return mean, std

    def to_tensor(self, images: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
        """uint8 (B, H, W, C) -> normalised float32 (B, C, H, W) on `device`."""
        import torch

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
