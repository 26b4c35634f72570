"""Tiny fixtures: a few dozen small images in two visible groups, and a narrow, fast network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A narrow network and short training: the whole suite must run in minutes on 2 CPU cores. The
# objective is pinned: the two-group images differ by brightness, which contrastive views (colour
# jitter) teach the encoder to ignore; tests of the automatic objective name it themselves.
TINY = dict(
    objective="reconstruction",
    image_size=16,
    width=0.125,
    latent_dim=8,
    epochs=2,
    batch_size=16,
    n_components=2,
    n_init=1,
    reduced_dim=4,
    progress=False,
)


def two_group_images(
    n: int = 48, size: int = 16, channels: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Half dark images with a bright square at the top left, half bright with a dark one bottom right."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.empty((n, size, size, channels), dtype=np.uint8)
    half = size // 2
    for i, label in enumerate(labels):
        base = (
            rng.integers(0, 60, (size, size, channels))
            if label == 0
            else rng.integers(190, 255, (size, size, channels))
        )
        img = base.astype(np.uint8)
        if label == 0:
            img[:half, :half] = 230
        else:
            img[half:, half:] = 20
        images[i] = img
    return images, labels


@pytest.fixture
def images() -> np.ndarray:
    return two_group_images()[0]


@pytest.fixture
def labelled() -> tuple[np.ndarray, np.ndarray]:
    return two_group_images()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/{dark,bright}/*.png|jpg: 12 images per class, mixed extensions and cases."""
    imgs, labels = two_group_images(24)
    root = tmp_path / "images"
    for i, (img, label) in enumerate(zip(imgs, labels)):
        folder = root / ("dark" if label == 0 else "bright")
        folder.mkdir(parents=True, exist_ok=True)
        ext = [".png", ".JPG", ".jpeg", ".PNG"][i % 4]
        Image.fromarray(img).save(folder / f"img {i:02d}{ext}", quality=95)
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared data folder is missing: expected {SHARED_DATA} (see README: Data)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors gain nothing from a second thread, and threads contend badly on a busy machine."""
    import torch

    torch.set_num_threads(1)


# The same tiny settings as `aegmm fit` options (n_init and progress have no flag; --quiet instead)
FLAGS = {
    "objective": "--objective",
    "image_size": "--image-size",
    "width": "--width",
    "latent_dim": "--latent-dim",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "n_components": "--clusters",
    "reduced_dim": "--reduced-dim",
}


def tiny_fit_args(epochs: int = 1) -> list[str]:
    settings = TINY | {"epochs": epochs}
    return [arg for key, flag in FLAGS.items() for arg in (flag, str(settings[key]))] + ["--quiet"]


TINY_ARGS = tiny_fit_args()
