"""Building blocks of the decoder, in the style of torchvision's models/resnet.py."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv3x3


def up2x(in_planes: int, out_planes: int) -> nn.ConvTranspose2d:
    """2x upsampling transposed convolution (kernel 4, stride 2, padding 1: exact doubling)."""
    return nn.ConvTranspose2d(in_planes, out_planes, kernel_size=4, stride=2, padding=1, bias=False)


class UpBlock(nn.Module):
    """Double the spatial size, change the channel count, then refine with a residual block."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.up = up2x(in_planes, out_planes)
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.block = BasicBlock(out_planes, out_planes)  # torchvision's residual block

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn(self.up(x)))  # (B, out, 2H, 2W)
        return self.block(out)


def output_head(in_planes: int, channels: int) -> nn.Conv2d:
    """Last 3x3 convolution to the image's channel count (normalised pixel space, no activation)."""
    return conv3x3(in_planes, channels)
