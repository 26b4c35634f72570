"""Neural networks: the ResNet-18 autoencoder, its blocks, and an ensemble of autoencoders."""

from .autoencoder import AutoEncoder, Decoder, Encoder
from .ensemble import Ensemble

__all__ = ["AutoEncoder", "Decoder", "Encoder", "Ensemble"]
