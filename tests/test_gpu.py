"""CUDA path: mixed precision and channels-last training. Skips on machines without a GPU."""

import numpy as np
import pytest
import torch

from aegmm import ImageClusterer
from conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_training_lowers_the_loss_and_predicts_like_cpu(images):
    clusterer = ImageClusterer(**(TINY | {"epochs": 3, "device": "cuda"})).fit(images)
    history = clusterer.history_
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert next(clusterer.autoencoder_.parameters()).device.type == "cpu"  # state is kept on CPU
    assert np.isfinite(clusterer.score_samples(images)).all()
