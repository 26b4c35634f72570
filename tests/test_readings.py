"""The report's readings: its warnings fire by their stated rules, and numbers read at 3 figures."""

import numpy as np

from aegmm.evaluation.plots import feature_maps_grid
from aegmm.evaluation.readings import FEW_IMAGES, too_few_images, training_warnings
from aegmm.evaluation.report import _fmt

FINE = {"psnr": 20.0, "n_images": 1000}


def _history(*val_losses):
    return [{"epoch": i + 1, "train_loss": v, "val_loss": v} for i, v in enumerate(val_losses)]


def test_undertrained_when_the_validation_loss_still_falls_by_more_than_two_percent():
    assert training_warnings(FINE, _history(1.0, 0.90, 0.85)) == [
        "The autoencoder looks undertrained: its validation loss still fell by 6% in the last epoch "
        "(the rule: more than 2%). More --epochs would likely help."
    ]
    assert training_warnings(FINE, _history(1.0, 0.90, 0.89)) == []  # 1.1%: settled
    assert training_warnings(FINE, [{"epoch": 1, "val_loss": float("nan")}]) == []


def test_blurry_reconstructions_and_few_images_are_flagged():
    notes = training_warnings({"psnr": 14.2, "n_images": FEW_IMAGES - 1}, _history(1.0, 1.0))
    assert len(notes) == 2
    assert notes[0].startswith("The reconstructions are blurry: PSNR 14.2 dB, below 15 dB")
    assert notes[1].startswith(f"Only {FEW_IMAGES - 1} images were evaluated")


def test_a_mixture_with_more_parameters_than_images_is_unreliable():
    assert too_few_images("the mixture of FAKE", 250, 2309).startswith(
        "Unreliable: the mixture of FAKE has 2,309 free parameters but rests on 250 images"
    )
    assert too_few_images("the mixture of FAKE", 2309, 2309) == ""


def test_numbers_read_at_three_significant_figures():
    assert [_fmt(v) for v in (39.1382, 0.2124, 0.000123456, 114774.31, -27.83, 3)] == [
        "39.1", "0.212", "0.000123", "114,774", "-27.8", "3",
    ]  # fmt: skip


def test_feature_maps_of_one_pixel_are_left_out():
    originals = np.zeros((2, 8, 8, 3), np.uint8)
    maps = [np.random.default_rng(0).random((2, 4, s, s)) for s in (8, 4, 1)]
    figure = feature_maps_grid(originals, maps, ["stem", "stage 1", "stage 2"])
    labels = " ".join(t.get_text() for t in figure.axes[0].texts)
    assert "stem" in labels and "stage 1" in labels and "stage 2" not in labels
