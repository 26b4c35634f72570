"""aegmm: cluster image collections with a ResNet-18 autoencoder and a Gaussian mixture."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aegmm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "unknown"

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
