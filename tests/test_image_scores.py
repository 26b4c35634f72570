import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from aegmm.evaluation.image_scores import high_frequency, reconstruction


def _scenes(n=12, size=64, seed=0):
    """Smooth random scenes with some fine texture, float in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, size // 8, size // 8))
    scenes = np.kron(coarse, np.ones((8, 8)))  # blocky layout ...
    return np.clip(scenes + 0.15 * rng.standard_normal((n, size, size)), 0, 1)  # ... plus grain


def test_shrinking_without_a_low_pass_filter_scores_higher_than_with_one():
    big = _scenes()
    decimated = big[:, ::4, ::4]  # aliasing: keeps the grain's energy up to Nyquist
    antialiased = gaussian_filter(big, sigma=(0, 2, 2))[:, ::4, ::4]  # low-pass first, as photos are
    assert np.all(high_frequency(decimated) > high_frequency(antialiased) + 1.0)


def test_score_ignores_brightness_and_contrast_and_colour_is_averaged():
    grey = _scenes(n=4, size=32)
    base = high_frequency(grey)
    np.testing.assert_allclose(high_frequency(0.3 * grey + 0.5), base, rtol=1e-4, atol=1e-4)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_allclose(high_frequency(rgb), base, rtol=1e-4, atol=1e-4)


def test_chunks_give_the_same_scores_and_flat_images_score_finite():
    images = (_scenes(n=7, size=32) * 255).astype(np.uint8)
    np.testing.assert_allclose(high_frequency(images, chunk=3), high_frequency(images), rtol=1e-5)
    flat = np.full((2, 16, 16), 128, dtype=np.uint8)
    assert np.all(np.isfinite(high_frequency(flat)))


def test_bad_shapes_and_bands_are_refused():
    with pytest.raises(ValueError, match="H, W >= 4"):
        high_frequency(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="band"):
        high_frequency(np.zeros((3, 8, 8)), band=0.9)


def test_reconstruction_score_is_minus_the_per_image_error():
    images = np.array([[[0, 255]], [[255, 255]]], dtype=np.uint8)[..., None]  # (2, 1, 2, 1)
    recon = np.array([[[0.0, 1.0]], [[0.5, 1.0]]])[..., None]
    np.testing.assert_allclose(reconstruction(images, recon), [0.0, -0.125])
