"""--train-minutes (TrainConfig.train_minutes): epochs timed before training, then an exact run."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import aegmm
from aegmm import ImageClusterer, budget, contrastive
from aegmm import train as train_module
from aegmm.config import ModelConfig, TrainConfig
from aegmm.contrastive import train_contrastive
from aegmm.preprocess import Normalizer
from aegmm.train import train_autoencoder
from conftest import TINY, two_group_images

MODEL = ModelConfig(image_size=16, channels=3, latent_dim=8, width=0.125)
TRAINERS = {"reconstruction": train_autoencoder, "contrastive": train_contrastive}


@pytest.fixture(scope="module")
def data():
    images, _ = two_group_images(48)
    return images, Normalizer.fit(images)


def _weights(model) -> list[torch.Tensor]:
    return list(model.state_dict().values())


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b), strict=True))


def test_epochs_within_counts_whole_epochs_after_the_time_spent_and_at_least_one():
    assert budget.epochs_within(1.0, 0.0, 10.0) == 6
    assert budget.epochs_within(1.0, 5.0, 10.0) == 5  # timing took 5 of the 60 seconds
    assert budget.epochs_within(1.0, 0.0, 11.0) == 5  # no partial epoch
    assert budget.epochs_within(0.01, 0.0, 10.0) == 1  # a budget under one epoch still trains one


def test_within_budget_times_only_auto_epochs_under_train_minutes():
    def untimed() -> float:
        raise AssertionError("timed although the epochs were given")

    for config in (TrainConfig(epochs=4, train_minutes=1.0), TrainConfig(epochs="auto")):
        assert budget.within_budget(config, untimed, None, False, False) is config
    timed = budget.within_budget(TrainConfig(train_minutes=1.0), lambda: 7.0, None, False, False)
    assert timed.epochs == 8 and timed.train_minutes == 1.0  # 60 s // 7 s, the budget kept as a record


def test_seconds_per_epoch_scales_the_timed_steps_to_every_batch_and_validation_image(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(
        budget, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock["now"])})
    )
    seen = []

    def step(positions):  # each training step takes 1 s on the fake clock, validation 2 s a batch
        seen.append(("step", len(positions)))
        clock["now"] += 1.0

    def validate(positions):
        seen.append(("validate", len(positions)))
        clock["now"] += 2.0

    train_idx, val_idx = np.arange(100), np.arange(100, 130)
    seconds = budget.seconds_per_epoch(step, validate, train_idx, val_idx, batch_size=16)
    assert seen == [("step", 16)] * (1 + budget.TIMED_STEPS) + [("validate", 16)]  # warm-up not timed
    assert seconds == pytest.approx(1.0 * 7 + 2.0 * 30 / 16)  # 7 batches of 100, 30 validation images
    assert budget.seconds_per_epoch(step, validate, train_idx, val_idx[:1], 16) == pytest.approx(7.0)


@pytest.mark.parametrize("objective", ["reconstruction", "contrastive"])
def test_a_timed_run_trains_the_weights_of_the_same_epochs_given(data, objective, capsys):
    images, normalizer = data
    trainer = TRAINERS[objective]
    timed_config = TrainConfig(train_minutes=0.02, batch_size=16, device="cpu", seed=3)
    timed, history = trainer(images, MODEL, timed_config, normalizer, progress=True)
    epochs = len(history)
    assert epochs >= 1 and "--train-minutes 0.02: an epoch takes about" in capsys.readouterr().err
    given, _ = trainer(images, MODEL, replace(timed_config, epochs=epochs), normalizer, progress=False)
    assert _same(timed, given)  # the timing steps ran on copies: nothing of them reached the run


def test_an_interrupted_timed_run_resumes_with_its_checkpoint_epochs_without_timing_again(
    data, tmp_path, monkeypatch
):
    images, normalizer = data
    three = TrainConfig(epochs=3, train_minutes=0.5, batch_size=16, device="cpu")  # as a timed run saves it
    whole, _ = train_contrastive(images, MODEL, three, normalizer, progress=False)

    def stop_after_two(epoch, model, history):
        if epoch == 2:
            raise KeyboardInterrupt

    folder = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        train_contrastive(images, MODEL, three, normalizer, checkpoint_dir=folder, on_epoch=stop_after_two)
    monkeypatch.setattr(contrastive, "seconds_per_epoch", lambda *args: pytest.fail("timed on resume"))
    again = replace(three, epochs="auto")
    resumed, history = train_contrastive(
        images, MODEL, again, normalizer, checkpoint_dir=folder, resume=True, progress=False
    )
    assert len(history) == 3 and _same(whole, resumed)


def test_train_minutes_must_be_a_finite_number_at_least_zero():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="train_minutes must be a finite number >= 0"):
            TrainConfig(train_minutes=bad)
    assert TrainConfig(train_minutes=2.0).resolve(channels=3, n_train=1000).epochs == "auto"  # timed later
    assert TrainConfig(train_minutes=3.0, members=2).member(1).train_minutes == 1.5  # members share them


def test_a_timed_ensemble_trains_every_member_for_the_first_members_epochs_and_saves_them(
    tmp_path, monkeypatch
):
    timings = iter([0.4, 0.05])  # the second member would get more epochs if it were timed too
    monkeypatch.setattr(train_module, "seconds_per_epoch", lambda *args: next(timings))
    images, _ = two_group_images(64, channels=1)
    params = TINY | {"epochs": "auto", "train_minutes": 0.05, "members": 2, "n_init": 3}
    clusterer = ImageClusterer(**params).fit(images)
    assert clusterer.config_.train.epochs == 3 == len(clusterer.history_)  # (1.5 s - spent) // 0.4 s
    assert clusterer.config_.train.train_minutes == 0.05  # the record of how the epochs were chosen
    clusterer.save(tmp_path / "run")
    saved = aegmm.load(tmp_path / "run", progress=False)
    assert saved.config_.train.epochs == 3 and ImageClusterer.from_config(saved.config_).epochs == 3


def test_the_command_line_refuses_given_epochs_with_train_minutes_in_one_line(tmp_path):
    out = tmp_path / "run"
    for args, said in (
        (
            ["--epochs", "5", "--train-minutes", "1"],
            "--train-minutes sets the epochs, so it needs --epochs auto",
        ),
        (["--train-minutes", "-1"], "--train-minutes must be >= 0, got -1.0"),
    ):
        command = [sys.executable, "-m", "aegmm", "fit", "builtin:digits", "--out", str(out), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and said in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert not out.exists()
