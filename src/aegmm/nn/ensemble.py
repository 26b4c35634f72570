"""Several autoencoders side by side: one network to encode, reconstruct, save and load."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .autoencoder import AutoEncoder, Decoder, Encoder


class EnsembleEncoder(nn.Module):
    """The members' encoders. An image's features are each member's, side by side; the mixture
    scales each member's part (MixtureConfig.parts, scaling.py)."""

    def __init__(self, encoders: Sequence[Encoder]) -> None:
        super().__init__()
        self.members = nn.ModuleList(encoders)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """The first member's spatial outputs, for the 'encoded images' figure."""
        return self.members[0].feature_maps(x)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([member(x) for member in self.members], dim=1)  # the latent vectors

    def features(self, x: Tensor, kind: str) -> tuple[Tensor, Tensor]:
        """(the members' features of `kind`, side by side as above; their latent vectors, concatenated)."""
        pairs = [member.features(x, kind) for member in self.members]
        return torch.cat([h for h, _ in pairs], dim=1), torch.cat([z for _, z in pairs], dim=1)


class EnsembleDecoder(nn.Module):
    """The members' decoders: each rebuilds the image from its own member's latent vector (its
    slice of the concatenation); the reconstruction is their mean."""

    def __init__(self, decoders: Sequence[Decoder], latent_dim: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(decoders)
        self.latent_dim = latent_dim

    def forward(self, z: Tensor) -> Tensor:
        parts = z.split(self.latent_dim, dim=1)
        return torch.stack([member(part) for member, part in zip(self.members, parts, strict=True)]).mean(0)


class Ensemble(nn.Module):
    """Autoencoders of one ModelConfig, trained apart (seeds seed, seed+1, ...), used as one network."""

    def __init__(self, networks: Sequence[AutoEncoder]) -> None:
        super().__init__()
        if len(networks) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(networks)}")
        self.config = networks[0].config
        if any(n.config != self.config for n in networks):
            raise ValueError("the members of an ensemble must share one ModelConfig")
        self.encoder = EnsembleEncoder([n.encoder for n in networks])
        self.decoder = EnsembleDecoder([n.decoder for n in networks], self.config.latent_dim)

    @classmethod
    def untrained(cls, config: ModelConfig, members: int) -> Ensemble:
        """`members` freshly initialised autoencoders (to load saved weights into)."""
        return cls([AutoEncoder(config) for _ in range(members)])

    @property
    def members(self) -> int:
        return len(self.encoder.members)

    def feature_dim(self, features: str) -> int:
        """Numbers per image of the features "bottleneck" or "pooled", all members together."""
        return self.config.feature_dim(features) * self.members

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return self.decoder(z), z
