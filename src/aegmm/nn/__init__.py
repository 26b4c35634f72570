"""Neural networks: the ResNet-18 autoencoder and its blocks."""

from .autoencoder import AutoEncoder, Decoder, Encoder

__all__ = ["AutoEncoder", "Decoder", "Encoder"]
