import json

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

from aegmm import config as config_module
from aegmm import train as train_module
from aegmm.checkpoint import has_checkpoint
from aegmm.cli_parser import build_parser
from aegmm.config import ModelConfig, TrainConfig
from aegmm.nn import AutoEncoder
from aegmm.precision import Precision, precision_plan
from aegmm.preprocess import Normalizer
from aegmm.train import _mean_loss, epoch_batches, evaluating_on, train_autoencoder
from conftest import two_group_images

MODEL = ModelConfig(image_size=16, channels=3, latent_dim=8, width=0.125)


def _train(images, **kwargs):
    settings = dict(epochs=2, batch_size=16, seed=0, device="cpu") | kwargs
    extra = {k: settings.pop(k) for k in ("checkpoint_dir", "resume", "normalizer") if k in settings}
    normalizer = extra.pop("normalizer", Normalizer.fit(images))
    return train_autoencoder(images, MODEL, TrainConfig(**settings), normalizer, progress=False, **extra)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_lowers_the_reconstruction_loss(images):
    normalizer = Normalizer.fit(images)
    torch.manual_seed(0)
    from aegmm.nn import AutoEncoder

    before = _mean_loss(AutoEncoder(MODEL), images, normalizer, torch.device("cpu"))
    model, history = _train(images, epochs=4, batch_size=8, lr=3e-3)
    after = _mean_loss(model, images, normalizer, torch.device("cpu"))
    assert after < 0.7 * before
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(np.isfinite(h["val_loss"]) for h in history)


def test_same_seed_same_weights_other_seed_other_weights(images):
    a, _ = _train(images)
    b, _ = _train(images)
    c, _ = _train(images, seed=1)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(images, tmp_path):
    full, full_history = _train(images, epochs=3, noise=0.1, flip=True)
    _train(images, epochs=1, noise=0.1, flip=True, checkpoint_dir=tmp_path)  # "interrupted" after epoch 1
    assert has_checkpoint(tmp_path)
    resumed, history = _train(images, epochs=3, noise=0.1, flip=True, checkpoint_dir=tmp_path, resume=True)
    wf, wr = _weights(full), _weights(resumed)
    assert all(torch.allclose(wf[k].float(), wr[k].float(), atol=1e-6) for k in wf)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] == pytest.approx(full_history[-1]["train_loss"], rel=1e-5)


def test_resume_refuses_changed_settings(images, tmp_path):
    _train(images, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"training settings changed: \['lr'\]"):
        _train(images, epochs=2, lr=0.01, checkpoint_dir=tmp_path, resume=True)


def test_resume_refuses_other_images_even_of_the_same_count(images, tmp_path):
    _train(images, epochs=1, checkpoint_dir=tmp_path)
    changed = images.copy()
    changed[7, 3, 3, 0] ^= 1  # one pixel of one image
    with pytest.raises(ValueError, match=r"trained on 48 other images \(sha256 \w{12}\), now 48 images"):
        _train(changed, epochs=2, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"trained on 48 other images .* now 40 images"):
        _train(images[:40], epochs=2, checkpoint_dir=tmp_path, resume=True)
    _train(images.copy(), epochs=2, checkpoint_dir=tmp_path, resume=True)  # equal images: resumes


def test_resume_refuses_a_checkpoint_without_a_data_fingerprint(images, tmp_path):
    _train(images, epochs=1, checkpoint_dir=tmp_path)
    state = tmp_path / "train_state.safetensors"
    tensors = safetensors.torch.load_file(state)
    with safetensors.safe_open(state, framework="pt") as handle:
        meta = json.loads(handle.metadata()["aegmm.checkpoint"])
    meta.pop("data")  # as an older aegmm wrote it
    safetensors.torch.save_file(tensors, state, metadata={"aegmm.checkpoint": json.dumps(meta)})
    with pytest.raises(ValueError, match="records no fingerprint of its training images"):
        _train(images, epochs=2, checkpoint_dir=tmp_path, resume=True)


def test_a_non_finite_loss_stops_training_and_names_the_epoch(images, tmp_path):
    _train(images, epochs=1, checkpoint_dir=tmp_path)
    broken = Normalizer(mean=(0.5,) * 3, std=(1e-30,) * 3)  # inputs overflow to inf
    with pytest.raises(FloatingPointError, match="loss became (inf|nan) in epoch 2"):
        _train(images, epochs=2, checkpoint_dir=tmp_path, resume=True, normalizer=broken)
    assert has_checkpoint(tmp_path)  # the last good checkpoint (epoch 1) is kept


def test_batches_cover_each_image_once_and_change_order_per_epoch():
    config = TrainConfig(batch_size=8, seed=3)
    first = np.concatenate(epoch_batches(50, config, 1))
    second = np.concatenate(epoch_batches(50, config, 2))
    assert sorted(first) == list(range(50)) and sorted(second) == list(range(50))
    assert not np.array_equal(first, second)


def test_train_images_trains_on_a_random_subset_and_validates_inside_it(images):
    read: list[np.ndarray] = []

    class Watched(np.ndarray):  # records which rows training and validation read
        def __getitem__(self, key):
            if isinstance(key, np.ndarray):
                read.append(np.asarray(key))
            return np.asarray(super().__getitem__(key))

    _train(images.view(Watched), epochs=2, train_images=20, normalizer=Normalizer.fit(images))
    touched = np.unique(np.concatenate(read))
    assert len(touched) == 20 < len(images)


@pytest.mark.parametrize(
    "n_train,batch_size,epochs",
    [(1617, 128, 39), (7200, 128, 10), (14_400, 256, 10), (1_000_000, 128, 10), (40, 128, 50)],
)
def test_auto_epochs_give_a_small_collection_at_least_500_steps_and_an_autoencoder_at_most_50_epochs(
    n_train, batch_size, epochs
):
    # 1,617 = scikit-learn's 1,797 digits less validation: 13 batches an epoch, 39 epochs
    assert TrainConfig(batch_size=batch_size).resolve(channels=1, n_train=n_train).epochs == epochs
    assert TrainConfig(epochs=3).resolve(channels=1, n_train=n_train).epochs == 3  # given: kept


@pytest.mark.parametrize(
    "n_train,objective,precision,epochs",
    [
        (90, "contrastive", "float32", 500),  # 100 CIFAKE images less validation: one batch an epoch
        (180, "contrastive", "bfloat16", 500),  # 200 (results/small_epochs/): 500 steps, not 50 epochs
        (180, "hybrid", "float32", 500),  # the same contrastive features, and a decoder
        (900, "contrastive", "float32", 125),  # 4 batches of 256 an epoch
        (14_400, "contrastive", "float32", 10),  # 16,000 CIFAKE images: 57 batches, the base passes
        (14_400, "contrastive", "bfloat16", 22),
    ],
)
def test_auto_epochs_give_contrastive_training_500_steps_at_any_size(n_train, objective, precision, epochs):
    config = TrainConfig(objective=objective, precision=precision)
    assert config.resolve(channels=3, n_train=n_train).epochs == epochs


def test_auto_noise_denoises_single_channel_autoencoders_of_small_collections_only():
    def noise(n_train, **given):
        objective = given.pop("objective", None)
        channels = given.pop("channels", 1)
        return TrainConfig(**given).resolve(channels=channels, objective=objective, n_train=n_train).noise

    # scikit-learn's digits less validation: 39 auto epochs, denoised; 7,200 MNIST digits: 10, not
    assert noise(1617) == config_module.AUTO_NOISE == 0.1 and noise(7200) == 0.0
    assert noise(6272) == 0.1 and noise(6273) == 0.0  # 49 batches of 128 an epoch: 11 epochs; 50: 10
    assert noise(1617, batch_size=16) == 0.0  # 102 batches an epoch: 10 epochs are 500 steps
    assert TrainConfig().resolve(channels=1).noise == "auto"  # the collection unknown: left auto
    assert noise(1617, channels=3, objective="reconstruction") == 0.0
    assert noise(1617, objective="contrastive") == 0.0  # no inputs to noise
    assert noise(7200, noise=0.3) == 0.3 and noise(1617, noise=0) == 0  # given: kept
    for bad in (-0.1, float("nan"), "loud"):
        with pytest.raises(ValueError, match="noise must be a finite number >= 0 or 'auto'"):
            TrainConfig(noise=bad)
    parse = build_parser().parse_args
    assert parse(["fit", "x", "--out", "y"]).noise == "auto"
    assert parse(["fit", "x", "--out", "y", "--noise", "0.2"]).noise == 0.2


@pytest.mark.parametrize(
    "bad,why", [("-1", "must be >= 0 or 'auto', got -1.0"), ("nan", "must be a finite number, got 'nan'")]
)
def test_the_cli_refuses_a_bad_noise_in_one_line(bad, why, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "x", "--out", "y", "--noise", bad])
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1] == f"aegmm: error: --noise {why}"


def test_single_channel_training_is_denoised_by_default(images):
    gray = images[..., :1].copy()
    model = ModelConfig(image_size=16, channels=1, latent_dim=8, width=0.125)
    settings = dict(epochs=1, batch_size=16, seed=0, device="cpu")

    def weights(**given):
        config = TrainConfig(**settings, **given)
        net, _ = train_autoencoder(gray, model, config, Normalizer.fit(gray), progress=False)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    auto, clean, noisy = weights(), weights(noise=0.0), weights(noise=0.1)
    assert torch.equal(auto, noisy) and not torch.equal(auto, clean)


def test_auto_epochs_wait_for_the_image_count_and_bad_epochs_are_refused():
    assert TrainConfig().resolve(channels=3).epochs == "auto"
    for bad in (0, "many"):
        with pytest.raises(ValueError, match=f"epochs must be a whole number >= 1 or 'auto', got {bad!r}"):
            TrainConfig(epochs=bad)


def test_a_trainer_resolves_auto_epochs_from_its_training_images(images, monkeypatch):
    monkeypatch.setattr(config_module, "AUTO_EPOCHS", 1)
    monkeypatch.setattr(config_module, "AUTO_MIN_STEPS", 9)  # 43 of 48 train: 3 batches of 16
    _, history = _train(images, epochs="auto")
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_split_indices_with_a_limit_draws_both_parts_from_that_many_images():
    from aegmm.train import split_indices

    train, val = split_indices(1000, 0.1, seed=3, limit=200)
    assert (len(train), len(val)) == (180, 20)
    assert not set(train) & set(val)
    assert [len(p) for p in split_indices(50, 0.1, seed=3, limit=200)] == [45, 5]
    with pytest.raises(ValueError, match="train_images"):
        TrainConfig(train_images=1)


def test_bfloat16_training_uses_mixed_precision_and_still_learns(images):
    normalizer = Normalizer.fit(images)
    fp32, _ = _train(images, epochs=3, batch_size=8, lr=3e-3, normalizer=normalizer)
    bf16, history = _train(
        images, epochs=3, batch_size=8, lr=3e-3, normalizer=normalizer, precision="bfloat16"
    )
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(torch.isfinite(v).all() for v in bf16.state_dict().values())
    assert all(v.dtype != torch.bfloat16 for v in bf16.state_dict().values())  # weights stay float32
    differ = [
        k
        for k, v in fp32.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, bf16.state_dict()[k])
    ]
    assert differ, "bfloat16 autocast changed nothing: it was not applied"
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16, float16"):
        TrainConfig(precision="half")


@pytest.mark.parametrize(
    "precision, device, bf16, dtype, scaled",
    [
        ("auto", "cpu", False, None, False),
        ("auto", "mps", False, None, False),
        ("auto", "cuda", True, torch.bfloat16, False),
        ("auto", "cuda", False, torch.float16, True),
        ("float32", "cuda", True, None, False),
        ("bfloat16", "cpu", False, torch.bfloat16, False),
        ("bfloat16", "cuda", True, torch.bfloat16, False),
        ("float16", "cuda", True, torch.float16, True),
    ],
)
def test_precision_is_honoured_on_every_device(precision, device, bf16, dtype, scaled):
    assert precision_plan(precision, device, bf16) == Precision(dtype, scaled)


def test_impossible_precisions_are_refused():
    with pytest.raises(ValueError, match="precision float16 needs a CUDA GPU, but training runs on cpu"):
        precision_plan("float16", "cpu")
    with pytest.raises(ValueError, match="bfloat16 needs a GPU that supports it"):
        precision_plan("bfloat16", "cuda", bf16_supported=False)
    with pytest.raises(ValueError, match="precision float16 needs a CUDA GPU"):
        _train(two_group_images(8)[0], precision="float16")


def test_a_scaled_precision_steps_through_the_gradient_scaler_and_checkpoints_it(
    images, tmp_path, monkeypatch
):
    calls = []

    class SpyScaler(train_module.GradScaler):
        def scale(self, outputs):
            calls.append("scale")
            return super().scale(outputs)

        def step(self, optimizer, *args, **kwargs):
            calls.append("step")
            return super().step(optimizer, *args, **kwargs)

    plan = Precision(torch.bfloat16, True)  # float16's plan, with CPU autocast's dtype
    monkeypatch.setattr(train_module, "device_precision", lambda config, device: plan)
    monkeypatch.setattr(train_module, "GradScaler", SpyScaler)
    model, history = _train(images, epochs=2, batch_size=16, checkpoint_dir=tmp_path)
    steps = 2 * len(epoch_batches(43, TrainConfig(batch_size=16), 1, rank=0, world=1))  # 48 - 10% val
    assert calls == ["scale", "step"] * steps
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    saved = json.loads((tmp_path / "train_state.json").read_text())["scaler"]
    assert saved["scale"] > 0 and "_growth_tracker" in saved


def test_evaluating_on_another_device_never_moves_the_fitted_model():
    model = AutoEncoder(MODEL).train()
    pointers = [p.data_ptr() for p in model.parameters()]
    with evaluating_on(model, torch.device("meta")) as net:
        assert net is not model and next(net.parameters()).device.type == "meta" and not net.training
    assert next(model.parameters()).device.type == "cpu" and model.training
    assert [p.data_ptr() for p in model.parameters()] == pointers
    with evaluating_on(model, "cpu") as net:
        assert net is model and not net.training
    assert model.training  # the caller's training flag comes back
