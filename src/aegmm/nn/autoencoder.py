"""The ResNet-18 convolutional autoencoder: torchvision's trunk as encoder, a mirrored decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock

from ..config import FEATURES, ModelConfig
from .blocks import UpBlock, output_head

LAYERS = [2, 2, 2, 2]  # BasicBlocks per stage: ResNet-18
# oneDNN's strided 1x1 convolution corrupts the heap in backward_weights when its channels-last input
# has fewer channels than the kernel's block (16 with AVX-512, 8 with AVX2; oneDNN issue 6035): the
# downsampling shortcuts of narrow encoders (width 0.125: 8 channels) take StridedPointwise instead.
SAFE_STRIDED_1X1_CHANNELS = 16


class StridedPointwise(nn.Conv2d):
    """A 1x1 convolution with stride s, computed as the stride-1 convolution of every s-th pixel:
    the same numbers, without oneDNN's strided 1x1 kernels (see SAFE_STRIDED_1X1_CHANNELS)."""

    def forward(self, x: Tensor) -> Tensor:
        sampled = x[:, :, :: self.stride[0], :: self.stride[1]]
        return F.conv2d(sampled, self.weight, self.bias, 1, 0, self.dilation, self.groups)


def _safe_shortcuts(stages: nn.Sequential) -> None:
    """Each strided 1x1 shortcut with fewer than SAFE_STRIDED_1X1_CHANNELS inputs becomes a
    StridedPointwise holding the same weight (the state dict keeps its keys and values)."""
    for block in (block for stage in stages for block in stage):
        conv = block.downsample[0] if block.downsample is not None else None
        if conv is None or conv.stride == (1, 1) or conv.in_channels >= SAFE_STRIDED_1X1_CHANNELS:
            continue
        safe = StridedPointwise(conv.in_channels, conv.out_channels, 1, stride=conv.stride, bias=False)
        safe.weight = conv.weight
        block.downsample[0] = safe


class Encoder(nn.Module):
    """torchvision's ResNet-18 trunk, optionally narrowed and with a small-image stem."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.latent_dim == "auto":
            raise ValueError(
                "latent_dim 'auto' follows the objective: build from ModelConfig.resolve(objective)"
            )
        planes = config.planes
        trunk = resnet18(weights=None)  # torchvision's ResNet: conv1, bn1, relu, maxpool, layer1-4
        if config.width != 1.0:
            trunk.inplanes = planes[0]
            trunk.bn1 = nn.BatchNorm2d(planes[0])
            for i, (p, n) in enumerate(zip(planes, LAYERS)):
                setattr(
                    trunk, f"layer{i + 1}", trunk._make_layer(BasicBlock, p, n, stride=1 if i == 0 else 2)
                )
        if config.stem in ("small", "strided"):
            stride = 1 if config.stem == "small" else 2
            trunk.conv1 = nn.Conv2d(config.channels, planes[0], 3, stride=stride, padding=1, bias=False)
            trunk.maxpool = nn.Identity()
        else:
            trunk.conv1 = nn.Conv2d(config.channels, planes[0], 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
        self.stages = nn.Sequential(trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4)
        _safe_shortcuts(self.stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bottleneck = nn.Linear(planes[-1], config.latent_dim)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """Spatial outputs of the stem and each stage, for the 'encoded images' figure."""
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return maps

    def pooled(self, x: Tensor) -> Tensor:
        """The trunk's globally average-pooled output, before the bottleneck: (B, 512 x width)."""
        x = self.stages(self.stem(x))  # (B, 512w, H/f, W/f), f = config.downsampling
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.bottleneck(self.pooled(x))  # (B, latent_dim)

    def features(self, x: Tensor, kind: str) -> tuple[Tensor, Tensor]:
        """(the features of `kind`, "bottleneck" or "pooled"; the latent vector), in one pass."""
        if kind not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {kind!r}")
        h = self.pooled(x)
        z = self.bottleneck(h)
        return (h if kind == "pooled" else z), z


class Decoder(nn.Module):
    """Linear layer back to a 512-channel map, then 2x up-sampling residual stages to the image."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        planes = config.planes
        self.start = config.image_size // config.downsampling
        self.top = planes[-1]
        self.expand = nn.Linear(config.latent_dim, self.top * self.start * self.start)
        n_up = int(math.log2(config.downsampling))
        chain = [planes[max(len(planes) - 1 - i, 0)] for i in range(n_up + 1)]  # 512, 256, 128, 64, 64...
        self.stages = nn.Sequential(*(UpBlock(a, b) for a, b in zip(chain, chain[1:])))
        self.head = output_head(chain[-1], config.channels)

    def forward(self, z: Tensor) -> Tensor:
        x = self.expand(z).view(-1, self.top, self.start, self.start)  # (B, 512w, H/f, W/f)
        x = torch.relu(x)
        return self.head(self.stages(x))  # (B, C, H, W)


class AutoEncoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config = config.resolve("reconstruction")  # "auto" with no mixture to follow: the study's 32
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def feature_dim(self, features: str) -> int:
        """Numbers per image of the features "bottleneck" (latent_dim) or "pooled"."""
        return self.config.feature_dim(features)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return self.decoder(z), z
