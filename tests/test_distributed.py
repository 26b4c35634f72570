"""torchrun with 2 CPU processes (gloo on loopback) trains the same model as one process would."""

import copy
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import aegmm
from aegmm.config import ModelConfig, TrainConfig
from aegmm.nn import AutoEncoder
from aegmm.preprocess import Normalizer
from aegmm.train import epoch_batches, split_indices
from conftest import tiny_fit_args, two_group_images

ARGS = [*tiny_fit_args(epochs=2), "--device", "cpu"]
MODEL = ModelConfig(image_size=16, channels=3, latent_dim=8, width=0.125)
TRAIN = TrainConfig(epochs=2, batch_size=16, device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data, out, *extra: str, env: dict | None = None) -> None:
    """`aegmm fit DATA --out OUT` with the tiny settings in 2 CPU processes under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    command += ["-m", "aegmm", "fit", str(data), "--out", str(out), *ARGS, *extra]
    env = os.environ | {"OMP_NUM_THREADS": "1"} | (env or {})
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    images, labels = two_group_images(64)
    np.savez(root / "data.npz", images=images, labels=labels)
    (root / "shards").mkdir()
    _torchrun(root / "data.npz", root / "run", env={"AEGMM_SHARD_LOG": str(root / "shards")})
    return root, images


def test_the_distributed_run_loads_and_predicts(ddp_run):
    root, images = ddp_run
    clusterer = aegmm.load(root / "run", progress=False)
    assert clusterer.predict(images).shape == (64,)
    assert len(clusterer.history_) == 2


def test_ranks_train_on_disjoint_shards_that_cover_the_training_images(ddp_run):
    root, _ = ddp_run
    logs = [
        [json.loads(line) for line in (root / "shards" / f"rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    n_train = len(split_indices(64, TRAIN.val_fraction, TRAIN.seed)[0])
    for epoch0, epoch1 in zip(*logs):
        a, b = set(epoch0["indices"]), set(epoch1["indices"])
        assert not a & b
        assert a | b == set(range(n_train))


def _reference_weights(images: np.ndarray) -> dict[str, torch.Tensor]:
    """One process replaying DDP: each shard's own batch-norm statistics, gradients averaged.

    On CPU, batch norm cannot be synchronised (torch's SyncBatchNorm needs a GPU), so each
    process normalises with its own half-batch: a plain one-process run with the whole batch
    differs by that. This replay keeps everything else of a one-process run.
    """
    normalizer = Normalizer.fit(images)
    train_idx, _ = split_indices(len(images), TRAIN.val_fraction, TRAIN.seed)
    torch.manual_seed(TRAIN.seed)
    model = AutoEncoder(MODEL)
    optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN.lr)
    for epoch in range(1, TRAIN.epochs + 1):
        shards = [epoch_batches(len(train_idx), TRAIN, epoch, rank=r, world=2) for r in (0, 1)]
        for b0, b1 in zip(*shards):
            replica = copy.deepcopy(model)  # DDP broadcasts rank 0's buffers before each step
            optimizer.zero_grad()
            for net, batch in ((model, b0), (replica, b1)):
                x = normalizer.to_tensor(images[np.sort(train_idx[batch])])
                torch.nn.functional.mse_loss(net(x)[0], x).backward()
            for p, q in zip(model.parameters(), replica.parameters()):
                p.grad = (p.grad + q.grad) / 2
            optimizer.step()
    return model.state_dict()


def test_weights_equal_a_one_process_replay_of_the_same_global_batches(ddp_run):
    root, images = ddp_run
    saved = load_file(str(root / "run" / "autoencoder.safetensors"))
    reference = _reference_weights(images)
    for name, value in reference.items():
        assert torch.allclose(saved[name].float(), value.float(), atol=1e-5), name


def test_a_distributed_ensemble_trains_its_first_member_as_the_distributed_one_network_run(ddp_run):
    root, images = ddp_run
    _torchrun(root / "data.npz", root / "pair", "--members", "2")
    pair, single = aegmm.load(root / "pair", progress=False), aegmm.load(root / "run", progress=False)
    first = pair.autoencoder_.encoder.members[0].state_dict()
    assert all(torch.equal(v, first[k]) for k, v in single.autoencoder_.encoder.state_dict().items())
    assert pair.transform(images).shape == (64, 2 * MODEL.latent_dim)


def test_distributed_ranks_agree_on_the_epochs_timed_under_train_minutes(ddp_run):
    root, images = ddp_run
    _torchrun(root / "data.npz", root / "timed", "--epochs", "auto", "--train-minutes", "0.02")
    timed = aegmm.load(root / "timed", progress=False)  # ranks that disagreed would hang or fail
    assert timed.config_.train.epochs == len(timed.history_) >= 1
    assert timed.config_.train.train_minutes == 0.02 and timed.predict(images).shape == (64,)
