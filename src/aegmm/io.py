"""Saving and loading a fitted ImageClusterer: safetensors and JSON only, never pickle.

A run folder holds:
  config.json              every setting, package and format version, a sha256 per file below
  autoencoder.safetensors  network weights
  normalization.json       per-channel mean and std of the training images
  mixture.safetensors      standardiser, reducer and GaussianMixture arrays
  mixture.json             mixture metadata (K, BIC per K tried, convergence)
  history.json             per-epoch training and validation loss
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .config import FORMAT_VERSION, RunConfig
from .mixture import LatentMixture
from .nn import AutoEncoder
from .pipeline import ImageClusterer
from .preprocess import Normalizer
from .storage import (
    read_arrays,
    read_json,
    read_tensors,
    sha256,
    write_arrays,
    write_json,
    write_tensors,
)

CONFIG = "config.json"
WEIGHTS = "autoencoder.safetensors"
NORMALIZATION = "normalization.json"
MIXTURE_ARRAYS = "mixture.safetensors"
MIXTURE_META = "mixture.json"
HISTORY = "history.json"
MODEL_FILES = (WEIGHTS, NORMALIZATION, MIXTURE_ARRAYS, MIXTURE_META, HISTORY)


def package_version() -> str:
    from . import __version__

    return __version__


def save_run(clusterer: ImageClusterer, folder: Path) -> Path:
    """Write the model files; config.json goes last, so a folder without it is never loadable."""
    check_is_fitted(clusterer, "mixture_")
    folder.mkdir(parents=True, exist_ok=True)
    write_tensors(folder / WEIGHTS, clusterer.autoencoder_.state_dict())
    norm = clusterer.normalizer_
    write_json(folder / NORMALIZATION, {"mean": list(norm.mean), "std": list(norm.std)})
    arrays, meta = clusterer.mixture_.to_arrays()
    write_arrays(folder / MIXTURE_ARRAYS, arrays)
    write_json(folder / MIXTURE_META, meta)
    write_json(folder / HISTORY, clusterer.history_)
    config = {
        "format_version": FORMAT_VERSION,
        "aegmm_version": package_version(),
        **clusterer.config_.to_dict(),
        "files": {name: sha256(folder / name) for name in MODEL_FILES},
    }
    write_json(folder / CONFIG, config)
    return folder


def load(path: str | Path, *, progress: bool = True) -> ImageClusterer:
    """Load a fitted ImageClusterer from a run folder written by `save` or `aegmm fit`."""
    folder = Path(path)
    if not (folder / CONFIG).is_file():
        raise FileNotFoundError(f"{folder} is not an aegmm run: {CONFIG} is missing")
    saved = read_json(folder / CONFIG)
    version = saved.get("format_version") if isinstance(saved, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{folder} has model format version {version}; this aegmm ({package_version()}) "
            f"reads version {FORMAT_VERSION}"
        )
    files = saved.get("files")
    _verify_files(folder, files if isinstance(files, dict) else {})
    try:
        config = RunConfig.from_dict({k: saved[k] for k in ("model", "train", "mixture") if k in saved})
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"{folder / CONFIG} holds invalid settings ({exc})") from None
    return _rebuild(folder, config, progress)


def _verify_files(folder: Path, expected: dict[str, str]) -> None:
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is incomplete: {name} is missing")
        if expected.get(name) != sha256(folder / name):
            raise ValueError(
                f"{folder / name} is corrupted or was changed: its sha256 does not match config.json"
            )


def _read_normalizer(path: Path, channels: int) -> Normalizer:
    norm = read_json(path)
    try:
        mean, std = (tuple(float(v) for v in norm[key]) for key in ("mean", "std"))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} must hold lists 'mean' and 'std' of {channels} numbers") from None
    finite = np.isfinite(mean + std).all() and min(std, default=0.0) > 0
    if len(mean) != channels or len(std) != channels or not finite:
        raise ValueError(f"{path} must hold {channels} finite means and positive stds, got {mean}, {std}")
    return Normalizer(mean, std)


def _rebuild(folder: Path, config: RunConfig, progress: bool) -> ImageClusterer:
    m, x = config.model, config.mixture
    clusterer = ImageClusterer.from_config(config, progress=progress)
    model = AutoEncoder(m)
    try:
        model.load_state_dict(read_tensors(folder / WEIGHTS))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise ValueError(f"{folder / WEIGHTS} does not match the network in config.json ({first})") from None
    if not all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point()):
        raise ValueError(f"{folder / WEIGHTS} holds NaN or infinite weights")
    normalizer = _read_normalizer(folder / NORMALIZATION, m.channels)
    meta = read_json(folder / MIXTURE_META)
    try:
        mixture = LatentMixture.from_arrays(read_arrays(folder / MIXTURE_ARRAYS), meta, x)
        if mixture.center_.shape != (m.latent_dim,):
            raise ValueError(f"expected {m.latent_dim} latent dimensions, got {mixture.center_.shape}")
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{folder / MIXTURE_ARRAYS} does not hold a valid mixture ({exc})") from None
    clusterer.config_ = config
    clusterer.normalizer_ = normalizer
    clusterer.autoencoder_ = model.eval()
    clusterer.history_ = read_json(folder / HISTORY)
    clusterer.mixture_ = mixture
    clusterer.n_components_ = int(mixture.gmm_.n_components)
    return clusterer
