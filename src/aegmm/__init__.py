"""aegmm: cluster image collections with a ResNet-18 autoencoder and a Gaussian mixture."""

from .config import MixtureConfig, ModelConfig, RunConfig, TrainConfig
from .data import ImageSet, load_images
from .io import load
from .pipeline import Assignments, ImageClusterer

__all__ = [
    "Assignments",
    "ImageClusterer",
    "ImageSet",
    "MixtureConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "load",
    "load_images",
]
