"""Saving and reading the parts of a fitted run: safetensors and JSON only, never pickle.

A run folder holds:
  config.json              every setting, package and format version, a sha256 per file below
  autoencoder.safetensors  network weights (every member's, for an ensemble)
  normalization.json       per-channel mean and std of the training images
  mixture.safetensors      standardiser, reducer and GaussianMixture arrays
  mixture.json             mixture metadata (K, BIC per K tried, convergence)
  history.json             per-epoch training and validation loss
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import FORMAT_VERSION, RunConfig
from .mixture import LatentMixture
from .nn import AutoEncoder, Ensemble
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


@dataclass(frozen=True)
class SavedRun:
    """What a run folder holds: the settings, the trained network and everything fitted after it."""

    config: RunConfig
    autoencoder: AutoEncoder | Ensemble
    normalizer: Normalizer
    mixture: LatentMixture
    history: list[dict]


def save_run(folder: Path, run: SavedRun) -> Path:
    """Write the model files; config.json goes last, so a folder without it is never loadable."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tensors(folder / WEIGHTS, run.autoencoder.state_dict())
    write_json(folder / NORMALIZATION, {"mean": list(run.normalizer.mean), "std": list(run.normalizer.std)})
    arrays, meta = run.mixture.to_arrays()
    write_arrays(folder / MIXTURE_ARRAYS, arrays)
    write_json(folder / MIXTURE_META, meta)
    write_json(folder / HISTORY, run.history)
    config = {
        "format_version": FORMAT_VERSION,
        "aegmm_version": package_version(),
        **run.config.to_dict(),
        "files": {name: sha256(folder / name) for name in MODEL_FILES},
    }
    write_json(folder / CONFIG, config)
    return folder


def read_run(path: str | Path) -> SavedRun:
    """The parts of a run folder written by ``save_run``, each checked (sha256, shapes, finite values)."""
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
    return _read_parts(folder, config)


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


def _read_parts(folder: Path, config: RunConfig) -> SavedRun:
    m, x = config.model, config.mixture
    members = config.train.members
    if members == "auto":  # TrainConfig refuses any other non-count
        raise ValueError(f"{folder / CONFIG} must name how many members were trained, got {members!r}")
    if m.latent_dim == "auto":
        raise ValueError(f"{folder / CONFIG} must name the latent size the run trained, got 'auto'")
    model = AutoEncoder(m) if members == 1 else Ensemble.untrained(m, members)
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
        if mixture.center_.shape != (config.feature_dim,):
            dims = f"{config.feature_dim} dimensions ({x.features} features)"
            raise ValueError(f"expected {dims}, got {mixture.center_.shape}")
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{folder / MIXTURE_ARRAYS} does not hold a valid mixture ({exc})") from None
    return SavedRun(config, model.eval(), normalizer, mixture, read_json(folder / HISTORY))
