"""A patch-whitening start for the encoder's first convolution (TrainConfig.stem_init).

The fast CIFAR-10 training runs (Page 2018; Keller Jordan's airbench) start the first layer as the
whitening transform of the image patches it sees: its filters are the leading eigenvectors of the
patches' covariance, each scaled to give responses of unit variance, and the same filters negated
(a ReLU follows, so each direction needs both signs). The rest of the network then learns from
decorrelated inputs from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_PATCHES = 200_000  # patches the covariance is estimated from (every n-th of all)


def whitening_filters(patches: Tensor, filters: int, eps: float = 1e-2) -> Tensor:
    """(filters, D) rows from (N, D) patches: the leading filters // 2 eigenvectors of the patches'
    covariance, each over sqrt(eigenvalue + eps), leading first, then the same rows negated."""
    if patches.ndim != 2 or len(patches) < 2 or not 2 <= filters <= 2 * patches.shape[1]:
        raise ValueError(
            f"expected (N >= 2, D) patches and 2 to 2D filters, got {tuple(patches.shape)} and {filters}"
        )
    values, vectors = torch.linalg.eigh(torch.cov(patches.T.double()))  # ascending
    half = filters // 2
    lead = (vectors[:, -half:].flip(1) / (values[-half:].flip(0) + eps).sqrt()).T.float()
    bank = torch.cat([lead, -lead])
    if len(bank) < filters:  # an odd count: one more copy of the leading filter
        bank = torch.cat([bank, lead[:1]])
    return bank


@torch.no_grad()
def whiten_conv(conv: nn.Conv2d, images: Tensor) -> None:
    """Set ``conv``'s weights to the whitening filters of the patches it sees in ``images``
    (B, C, H, W), normalised as the network gets them. A patch of D numbers has D directions, so
    at most 2D filters whiten (a 3x3 colour patch: 54); any further filters keep their weights."""
    k, padding = conv.kernel_size[0], conv.padding[0]
    patches = F.unfold(images.float(), k, padding=padding, stride=conv.stride[0])  # (B, C*k*k, L)
    patches = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    step = max(1, len(patches) // MAX_PATCHES)
    count = min(conv.out_channels, 2 * patches.shape[1])
    bank = whitening_filters(patches[::step].cpu(), count)
    conv.weight[:count] = bank.reshape(count, *conv.weight.shape[1:]).to(conv.weight.device)
