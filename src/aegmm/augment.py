"""Random views of image batches for contrastive training: batched tensor ops on the batch's device.

Every random number is drawn on the CPU from a ``torch.Generator`` and then moved to the batch's
device, so the same generator state gives the same views on any device, and a resumed run draws
exactly what an uninterrupted one would have drawn.

Geometry (random resized crop, horizontal flip, small rotation) is ONE affine matrix per image,
applied with ``F.affine_grid`` + ``F.grid_sample``; the grid has the policy's ``size`` (default:
the image's), so a smaller view is cropped and resized in the same one step. Colour jitter
(brightness, contrast, saturation), grayscale and the optional Gaussian blur are per-image tensor
ops. All of it runs in pixel space: the batch is denormalised with the Normalizer's mean and
std, transformed, clipped to [0, 1] and normalised again, so "brightness x1.3" means what it
says, and pixels sampled outside the image are black (the background of digit scans), not the
mean colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .preprocess import Normalizer

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights of R, G, B (torchvision's rgb_to_grayscale)
YIQ = (LUMA, (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))  # RGB -> luma and the two chroma axes


@dataclass(frozen=True)
class AugmentPolicy:
    """How one random view of an image is drawn; see `default_policy` for the two kinds of image."""

    crop_scale: tuple[float, float] = (0.2, 1.0)  # area of the crop, as a fraction of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio (width / height) of the crop
    flip: bool = True  # mirror left-right with probability 0.5 (never for digits or letters)
    rotation: float = 0.0  # largest rotation in degrees, drawn uniformly in [-rotation, rotation]
    brightness: float = 0.4  # pixel values times a factor in [1 - b, 1 + b]
    contrast: float = 0.4  # distance from the image's mean gray times a factor in [1 - c, 1 + c]
    saturation: float = 0.4  # distance from each pixel's gray times a factor in [1 - s, 1 + s]
    hue: float = 0.0  # hue turned by up to this fraction of the colour circle (torchvision's hue)
    jitter_p: float = 0.8  # probability that an image gets the colour jitter at all
    grayscale_p: float = 0.2  # probability that an image is turned gray (after the jitter)
    blur_p: float = 0.0  # probability of a Gaussian blur (last; SimCLR's 0.5 for ImageNet, none for CIFAR)
    blur_sigma: tuple[float, float] = (0.1, 1.0)  # its standard deviation in view pixels, drawn uniformly
    size: int | None = None  # side of the views in pixels; None: the images' own

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 8:
            raise ValueError(f"size must be None or a side of >= 8 pixels, got {self.size}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio must be (lo, hi) with 0 < lo <= hi, got {self.crop_ratio}")
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"rotation must be in [0, 180] degrees, got {self.rotation}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (a fraction of the colour circle), got {self.hue}")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi <= 3:
            raise ValueError(
                f"blur_sigma must be (lo, hi) with 0 < lo <= hi <= 3 pixels, got {self.blur_sigma}"
            )
        for name in ("jitter_p", "grayscale_p", "blur_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")

    @property
    def colour(self) -> bool:
        """Whether the policy changes colours at all (it must not for single-channel images)."""
        jitter = self.jitter_p > 0 and max(self.brightness, self.contrast, self.saturation, self.hue) > 0
        return jitter or self.grayscale_p > 0


COLOUR = AugmentPolicy()  # SimCLR's CIFAR views, hue jitter left out (`hue` adds it)
GRAYSCALE = AugmentPolicy(  # digits and scans: no mirror images, no colour ops, milder crops
    crop_scale=(0.6, 1.0),
    crop_ratio=(0.8, 1.25),
    flip=False,
    rotation=15.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    jitter_p=0.0,
    grayscale_p=0.0,
)


def default_policy(channels: int) -> AugmentPolicy:
    """COLOUR for 3-channel images, GRAYSCALE for single-channel ones."""
    if channels == 3:
        return COLOUR
    if channels == 1:
        return GRAYSCALE
    raise ValueError(f"images must have 1 or 3 channels, got {channels}")


def check_policy(policy: AugmentPolicy, channels: int) -> None:
    """Colour ops need three channels: a policy with them is refused for single-channel images."""
    if channels == 1 and policy.colour:
        raise ValueError(
            "colour jitter and grayscale need 3-channel images, got 1 channel: set brightness, contrast, "
            "saturation, hue, jitter_p and grayscale_p to 0 (as GRAYSCALE does)"
        )


def augment(x: Tensor, policy: AugmentPolicy, normalizer: Normalizer, generator: torch.Generator) -> Tensor:
    """One random view of each normalised image in (B, C, H, W): (B, C, size, size), or the same
    shape when the policy sets no size; on the same device."""
    check_policy(policy, x.shape[1])
    mean = torch.tensor(normalizer.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(normalizer.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    pixels = x * std + mean  # (B, C, H, W) in [0, 1]
    theta = affine_matrices(len(x), policy, generator).to(device=x.device, dtype=x.dtype)
    height, width = (policy.size, policy.size) if policy.size else x.shape[2:]
    grid = F.affine_grid(theta, [len(x), x.shape[1], height, width], align_corners=False)  # (B, h, w, 2)
    pixels = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if policy.colour:
        pixels = colour_jitter(pixels, policy, generator)
    if policy.blur_p > 0:  # drawn last and only then: a policy without blur draws what it drew before
        pixels = gaussian_blur(pixels, policy, generator)
    return (pixels.clamp(0.0, 1.0) - mean) / std


def affine_matrices(n: int, policy: AugmentPolicy, generator: torch.Generator) -> Tensor:
    """(n, 2, 3) float32 maps from output to input coordinates ([-1, 1], affine_grid's convention).

    Each is rotation @ diag(flip * crop width, crop height) plus the crop centre: the output image
    shows a rotated, possibly mirrored crop of the input that lies inside it before rotation.
    """
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64)  # one row of draws per image
    lo, hi = policy.crop_scale
    area = lo + (hi - lo) * u[:, 0]
    log_lo, log_hi = math.log(policy.crop_ratio[0]), math.log(policy.crop_ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # fraction of the image's width
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (1 - width) * (2 * u[:, 2] - 1)  # the crop stays inside the image
    centre_y = (1 - height) * (2 * u[:, 3] - 1)
    sign = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if policy.flip else torch.ones(n, dtype=torch.float64)
    angle = torch.deg2rad(policy.rotation * (2 * u[:, 5] - 1))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * width * sign, -sin * height, centre_x], dim=1),
            torch.stack([sin * width * sign, cos * height, centre_y], dim=1),
        ],
        dim=1,
    )
    return theta.float()  # (n, 2, 3)


def colour_jitter(pixels: Tensor, policy: AugmentPolicy, generator: torch.Generator) -> Tensor:
    """Brightness, contrast, saturation, hue (in that order) then grayscale, on [0, 1] RGB (B, 3, H, W).

    The hue's draws come after the others' and only when the policy turns hues, so a policy without
    hue draws exactly the numbers it drew before hue existed (saved runs resume exactly)."""
    n = len(pixels)
    u = torch.rand(n, 5, generator=generator).to(pixels.device, pixels.dtype)
    turns = torch.rand(n, generator=generator).to(pixels.device, pixels.dtype) if policy.hue > 0 else None
    jitter = (u[:, 0] < policy.jitter_p).view(-1, 1, 1, 1)
    gray_too = (u[:, 1] < policy.grayscale_p).view(-1, 1, 1, 1)
    factors = [
        1 + strength * (2 * u[:, 2 + i] - 1)
        for i, strength in enumerate((policy.brightness, policy.contrast, policy.saturation))
    ]
    b, c, s = (
        torch.where(jitter, f.view(-1, 1, 1, 1), torch.ones_like(f).view(-1, 1, 1, 1)) for f in factors
    )
    out = (pixels * b).clamp(0.0, 1.0)
    mean_gray = grayscale(out).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    out = ((out - mean_gray) * c + mean_gray).clamp(0.0, 1.0)
    gray = grayscale(out)
    out = ((out - gray) * s + gray).clamp(0.0, 1.0)
    if turns is not None:
        angle = torch.where(
            jitter.view(-1), 2 * math.pi * policy.hue * (2 * turns - 1), torch.zeros_like(turns)
        )
        out = turn_hue(out, angle)
    return torch.where(gray_too, grayscale(out).expand_as(out), out)


def gaussian_blur(pixels: Tensor, policy: AugmentPolicy, generator: torch.Generator) -> Tensor:
    """Each image of (B, C, H, W) blurred with probability blur_p by a Gaussian of a standard deviation
    drawn in blur_sigma (pixels); the others pass unchanged. One separable depthwise convolution
    over the whole batch, a kernel per image (a one-tap kernel for those left sharp), edges mirrored."""
    n, channels, height, width = pixels.shape
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    lo, hi = policy.blur_sigma
    sigma = torch.where(u[:, 0] < policy.blur_p, lo + (hi - lo) * u[:, 1], 0.0)  # 0: left sharp
    radius = min(math.ceil(3 * hi), (min(height, width) - 1) // 2)  # mirroring needs less than a side
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-3)[:, None]) ** 2)  # (B, taps)
    weights = (weights / weights.sum(1, keepdim=True)).to(pixels.device, pixels.dtype)
    kernel = weights.repeat_interleave(channels, 0)  # (B * C, taps): one per image and channel
    flat = F.pad(pixels.reshape(1, n * channels, height, width), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * channels, 1, 1, -1), groups=n * channels)  # along rows
    flat = F.conv2d(flat, kernel.view(n * channels, 1, -1, 1), groups=n * channels)  # along columns
    return flat.view(n, channels, height, width)


def turn_hue(pixels: Tensor, angle: Tensor) -> Tensor:
    """RGB pixels (B, 3, H, W) with their chroma turned by ``angle`` (B,) radians around the gray axis.

    The turn is a rotation of the (I, Q) chroma plane of YIQ, which keeps the luma: one 3 x 3 matrix per
    image, applied as a batched matrix product (torchvision's HSV round trip is per-pixel branching).
    """
    to_yiq = torch.tensor(YIQ, dtype=pixels.dtype, device=pixels.device)
    cos, sin, zero, one = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle), torch.ones_like(angle)
    turn = torch.stack(
        [
            torch.stack([one, zero, zero], 1),
            torch.stack([zero, cos, -sin], 1),
            torch.stack([zero, sin, cos], 1),
        ],
        1,
    )  # (B, 3, 3)
    matrices = torch.linalg.inv(to_yiq) @ turn @ to_yiq
    out = torch.einsum("bij,bjhw->bihw", matrices, pixels)
    return out.clamp(0.0, 1.0)


def grayscale(pixels: Tensor) -> Tensor:
    """Luma of RGB pixels (B, 3, H, W) -> (B, 1, H, W)."""
    weights = torch.tensor(LUMA, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels * weights).sum(dim=1, keepdim=True)
