"""The CUDA path: predictions equal the CPU's, the model is never moved, every precision trains.

Skips on machines without a GPU; the device-independent parts (the precision plan, the gradient
scaler, never moving the model) are tested on CPU in test_train.py.
"""

import numpy as np
import pytest
import torch

from aegmm import ImageClusterer
from conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_predictions_on_cuda_equal_those_on_cpu(images):
    clusterer = ImageClusterer(**(TINY | {"device": "cpu"})).fit(images)
    cpu = clusterer.predict_proba(images), clusterer.score_samples(images)
    clusterer.device = "cuda"
    cuda = clusterer.predict_proba(images), clusterer.score_samples(images)
    assert next(clusterer.autoencoder_.parameters()).device.type == "cpu"  # never moved in place
    np.testing.assert_array_equal(cpu[0].argmax(axis=1), cuda[0].argmax(axis=1))
    np.testing.assert_allclose(cpu[0], cuda[0], atol=1e-3)
    np.testing.assert_allclose(cpu[1], cuda[1], rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("precision", ["auto", "float32", "float16", "bfloat16"])
def test_cuda_training_lowers_the_loss_in_every_precision(images, precision):
    if precision == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    clusterer = ImageClusterer(**(TINY | {"epochs": 3, "device": "cuda", "precision": precision})).fit(images)
    history = clusterer.history_
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert next(clusterer.autoencoder_.parameters()).device.type == "cpu"  # state is kept on CPU
    assert np.isfinite(clusterer.score_samples(images)).all()


@pytest.mark.parametrize("objective", ["reconstruction", "contrastive"])
def test_a_time_budget_on_cuda_picks_whole_epochs_and_trains_them(images, objective):
    settings = {"objective": objective, "epochs": "auto", "train_minutes": 0.05, "device": "cuda"}
    clusterer = ImageClusterer(**(TINY | settings)).fit(images)
    epochs = clusterer.config_.train.epochs  # the count the timed steps chose, saved as given
    assert isinstance(epochs, int) and epochs >= 1 and len(clusterer.history_) == epochs
    assert clusterer.config_.train.train_minutes == 0.05
