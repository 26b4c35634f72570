"""Per-image scores computed without labels, for telling domains (REAL vs FAKE, ...) apart.

Each score is oriented before any label is seen, following the detection literature, so that a
higher score means "more likely generated / resampled":

- ``high_frequency``: how much of an image's fine detail sits at the highest spatial frequencies.
  The image (grey) is high-passed (minus its 3x3 box mean), and the score is the log ratio of the
  residual's mean power at frequencies of at least ``HIGH_BAND`` cycles per pixel (next to the
  Nyquist limit of 0.5) to its mean power below. Images made by generators that upsample, or
  shrunk without a low-pass filter, keep excess energy there (Durall et al., CVPR 2020; Frank et
  al., ICML 2020); camera photos shrunk with antialiasing have little. It measures how the pixels
  were made and resized, not what they show: on a collection where both domains were resized the
  same way it carries no signal.
- ``reconstruction``: minus the autoencoder's per-image reconstruction error. AEROBLADE (Ricker et
  al., CVPR 2024) finds that generated images are reconstructed better by an autoencoder (there,
  the generator's own); here it is the run's autoencoder, so the orientation is a hypothesis and
  the AUROC is reported as computed, below 0.5 when the data say the opposite.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

HIGH_BAND = 0.4375  # cycles per pixel; the band [HIGH_BAND, Nyquist] holds the "high" power

SCORE_NAMES = {
    "high_frequency": "high-frequency energy (log ratio, high band / rest)",
    "reconstruction": "reconstruction error, negated (AEROBLADE's orientation)",
}


def high_frequency(images: np.ndarray, band: float = HIGH_BAND, chunk: int = 4096) -> np.ndarray:
    """(N,) log(mean residual power at |f| >= band / mean power at 0 < |f| < band) per image.

    ``images``: uint8 or float (N, H, W[, C]); colour is averaged to grey. Brightness offsets and
    contrast scaling do not change the score. Computed in chunks of ``chunk`` images.
    """
    if images.ndim not in (3, 4) or min(images.shape[1:3]) < 4:
        raise ValueError(f"images must be (N, H, W[, C]) with H, W >= 4, got shape {images.shape}")
    height, width = images.shape[1:3]
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])
    high, low = radius >= band, (radius > 0) & (radius < band)
    if not high.any() or not low.any():
        raise ValueError(f"band must lie between 0 and {radius.max():.3f} cycles per pixel, got {band}")
    out = np.empty(len(images))
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float32)
        grey = block.mean(axis=-1) if block.ndim == 4 else block
        residual = grey - uniform_filter(grey, size=(1, 3, 3), mode="reflect")
        power = np.abs(np.fft.fft2(residual)) ** 2
        tiny = 1e-12 * (1.0 + power.max(axis=(1, 2)))  # a flat image scores 0, not NaN
        out[start : start + len(block)] = np.log(power[:, high].mean(axis=1) + tiny) - np.log(
            power[:, low].mean(axis=1) + tiny
        )
    return out


def reconstruction(images: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """(N,) minus the mean squared error per image; ``images`` uint8, ``reconstructions`` in [0, 1]."""
    n = len(images)
    error = (images.reshape(n, -1) / 255.0 - reconstructions.reshape(n, -1)) ** 2
    return -error.mean(axis=1)
