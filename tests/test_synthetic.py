import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from aegmm.data.synthetic import DOMAIN_NAMES, digits_with_simulated, render_digits
from aegmm.evaluation.domains import positive_domain

UCI_LEVELS = np.rint(np.arange(17) * 255 / 16).astype(np.uint8)  # 0..16 scaled to 0..255


@pytest.fixture(scope="module")
def digits():
    return digits_with_simulated(seed=0)


def _features(images):
    return images.reshape(len(images), -1) / 255.0


def _classifier():
    return LogisticRegression(tol=1e-3, max_iter=1000)


def test_render_digits_shapes_dtypes_and_levels():
    images, labels = render_digits(n_per_digit=4, seed=0)
    assert images.shape == (40, 8, 8, 1)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 4))
    assert np.isin(images, UCI_LEVELS).all()  # 17 levels like scikit-learn's digits
    assert (images.max(axis=(1, 2, 3)) >= 200).all()  # every image has bright ink


def test_render_digits_other_size():
    images, labels = render_digits(n_per_digit=2, image_size=28, seed=0)
    assert images.shape == (20, 28, 28, 1)
    assert images.dtype == np.uint8
    assert len(labels) == 20
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]])
    assert border.mean() < 40 < images.max()  # dark background, bright ink


def test_render_digits_is_deterministic_for_a_seed():
    first, _ = render_digits(n_per_digit=3, seed=7)
    again, _ = render_digits(n_per_digit=3, seed=7)
    other, _ = render_digits(n_per_digit=3, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_per_digit": 0}, "n_per_digit must be >= 1, got 0"),
        ({"image_size": 0}, "image_size must be between 1 and 64, got 0"),
        ({"image_size": 65}, "image_size must be between 1 and 64, got 65"),
    ],
)
def test_render_digits_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        render_digits(**kwargs)


def test_digits_with_simulated_layout(digits):
    images, labels, domains = digits
    assert DOMAIN_NAMES[positive_domain(DOMAIN_NAMES).positive] == "simulated"  # the AUROCs' positive class
    assert images.shape == (1797 + 1800, 8, 8, 1)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64 and domains.dtype == np.int64
    np.testing.assert_array_equal(domains, np.repeat([0, 1], [1797, 1800]))

    real = load_digits()
    np.testing.assert_array_equal(images[:1797, :, :, 0], np.rint(real.images * 255 / 16))
    np.testing.assert_array_equal(labels[:1797], real.target)
    np.testing.assert_array_equal(labels[1797:], np.repeat(np.arange(10), 180))
    assert np.isin(images, UCI_LEVELS).all()


def test_digits_with_simulated_depends_on_seed_only_in_simulated_part(digits):
    images, labels, domains = digits
    other, other_labels, other_domains = digits_with_simulated(seed=1)
    np.testing.assert_array_equal(other[:1797], images[:1797])
    np.testing.assert_array_equal(other_labels, labels)
    np.testing.assert_array_equal(other_domains, domains)
    assert not np.array_equal(other[1797:], images[1797:])


def test_simulated_digits_look_like_real_ones_at_a_glance(digits):
    images, _, domains = digits
    real, simulated = images[domains == 0].astype(float), images[domains == 1].astype(float)
    # Same amount of ink (measured: real 78, simulated 74 of 255) and dark corners.
    assert abs(simulated.mean() - real.mean()) < 0.15 * real.mean()
    corners = simulated[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.mean() < 20


def test_simulated_digits_are_recognised_by_a_classifier_trained_on_real_ones(digits):
    images, labels, domains = digits
    real, simulated = domains == 0, domains == 1
    classifier = _classifier().fit(_features(images[real]), labels[real])
    accuracy = classifier.score(_features(images[simulated]), labels[simulated])
    assert accuracy >= 0.45  # measured 0.62-0.64 over seeds 0-4; chance is 0.10


def test_real_and_simulated_domains_are_distinguishable_but_not_trivially(digits):
    images, _, domains = digits
    scores = cross_val_score(_classifier(), _features(images), domains, cv=5)
    assert 0.7 <= scores.mean() <= 0.98  # measured 0.865-0.88 over seeds 0-4; chance is 0.50
