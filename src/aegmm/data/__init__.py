"""Input data: loaders for folders, zips, .npz files and built-in sets, kept as uint8."""

from .imageset import ImageSet
from .loaders import load_images

__all__ = ["ImageSet", "load_images"]
