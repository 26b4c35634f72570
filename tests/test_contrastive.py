"""Contrastive training and its augmentations, on tiny images and a narrow network."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aegmm import contrastive
from aegmm.augment import (
    COLOUR,
    GRAYSCALE,
    AugmentPolicy,
    affine_matrices,
    augment,
    colour_jitter,
    default_policy,
    gaussian_blur,
    grayscale,
    turn_hue,
)
from aegmm.config import ModelConfig, TrainConfig
from aegmm.contrastive import encode_features, nt_xent, train_contrastive
from aegmm.nn import AutoEncoder
from aegmm.preprocess import Normalizer
from conftest import two_group_images

MODEL = ModelConfig(image_size=16, width=0.125, latent_dim=8)
TRAIN = TrainConfig(epochs=2, batch_size=16, device="cpu", seed=0)
HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "seconds", "images_per_second"}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, Normalizer]:
    images = two_group_images(36)[0]
    return images, Normalizer.fit(images)


def _train(data, train=TRAIN, **kwargs):
    images, normalizer = data
    return train_contrastive(images, MODEL, train, normalizer, progress=False, **kwargs)


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


# -- NT-Xent ------------------------------------------------------------------------------------


def test_nt_xent_matches_a_hand_computed_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # 2 pairs whose views agree: positives have cosine 1
    assert float(nt_xent(a, a.clone(), 1.0)) == pytest.approx(math.log((math.e + 2) / math.e), rel=1e-6)
    assert float(nt_xent(a, a.clone(), 0.5)) == pytest.approx(math.log((math.e**2 + 2) / math.e**2), rel=1e-6)
    swapped = a.flip(0)  # each positive is orthogonal; one negative has cosine 1
    assert float(nt_xent(a, swapped, 1.0)) == pytest.approx(math.log(2 + math.e), rel=1e-6)
    assert float(nt_xent(3 * a, a, 1.0)) == pytest.approx(float(nt_xent(a, a, 1.0)))  # scale-free


def test_nt_xent_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="two \\(B, D\\) batches"):
        nt_xent(torch.zeros(3, 4), torch.zeros(2, 4), 0.5)


# -- augmentations ------------------------------------------------------------------------------


def test_policy_follows_the_channel_count():
    assert default_policy(3) is COLOUR and default_policy(1) is GRAYSCALE
    assert COLOUR.colour and COLOUR.flip
    assert not GRAYSCALE.colour and not GRAYSCALE.flip
    with pytest.raises(ValueError, match="1 or 3 channels"):
        default_policy(2)
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentPolicy(crop_scale=(0.5, 1.5))


def test_augmentations_are_seeded():
    x = torch.randn(8, 3, 16, 16)
    normalizer = Normalizer((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    first = augment(x, COLOUR, normalizer, torch.Generator().manual_seed(3))
    again = augment(x, COLOUR, normalizer, torch.Generator().manual_seed(3))
    other = augment(x, COLOUR, normalizer, torch.Generator().manual_seed(4))
    assert first.shape == x.shape
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_grayscale_policy_never_flips():
    ramp = torch.linspace(0, 1, 16).expand(16, 16)  # brighter to the right: a mirror is darker there
    x = ramp.view(1, 1, 16, 16).repeat(64, 1, 1, 1)
    normalizer = Normalizer((0.5,), (0.3,))
    normalised = (x - 0.5) / 0.3
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        assert (torch.linalg.det(affine_matrices(64, GRAYSCALE, generator)[:, :, :2]) > 0).all()
        out = normalizer.to_pixels(
            augment(normalised, GRAYSCALE, normalizer, torch.Generator().manual_seed(seed))
        )
        left, right = out[..., :8].mean(dim=(1, 2, 3)), out[..., 8:].mean(dim=(1, 2, 3))
        assert (right > left).all()
        assert not torch.isclose(out, x.flip(-1), atol=1e-3).all(dim=(1, 2, 3)).any()
    flipped = torch.linalg.det(affine_matrices(256, COLOUR, torch.Generator().manual_seed(0))[:, :, :2]) < 0
    assert 0 < flipped.sum() < 256  # the colour policy does flip, about half the time


def test_grayscale_policy_applies_no_colour_ops():
    x = torch.rand(16, 1, 16, 16)
    normalizer = Normalizer((0.4,), (0.2,))
    out = augment((x - 0.4) / 0.2, GRAYSCALE, normalizer, torch.Generator().manual_seed(5))
    theta = affine_matrices(16, GRAYSCALE, torch.Generator().manual_seed(5))
    grid = F.affine_grid(theta, [16, 1, 16, 16], align_corners=False)
    geometry_only = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.allclose(normalizer.to_pixels(out), geometry_only.clamp(0, 1), atol=1e-5)
    with pytest.raises(ValueError, match="colour jitter and grayscale need 3-channel"):
        augment(x, COLOUR, normalizer, torch.Generator())


def test_hue_turns_keep_the_luma_and_a_full_turn_is_the_identity():
    pixels = 0.4 + 0.2 * torch.rand(6, 3, 8, 8)  # little chroma: no turn reaches 0 or 1 and clips
    angles = torch.tensor([0.0, 2 * math.pi, 0.3, -0.3, math.pi, 1.0])
    out = turn_hue(pixels, angles)
    torch.testing.assert_close(out[:2], pixels[:2], atol=1e-5, rtol=0)
    assert not torch.allclose(out[2:], pixels[2:], atol=1e-2)
    torch.testing.assert_close(grayscale(out), grayscale(pixels), atol=2e-3, rtol=0)
    half = turn_hue(turn_hue(pixels[:1], torch.tensor([math.pi])), torch.tensor([math.pi]))
    torch.testing.assert_close(half, pixels[:1], atol=1e-5, rtol=0)
    gray = pixels.mean(dim=1, keepdim=True).expand_as(pixels)
    torch.testing.assert_close(turn_hue(gray, angles), gray, atol=1e-5, rtol=0)  # no chroma to turn


def test_hue_jitter_draws_after_the_other_jitters_and_only_when_asked():
    pixels = 0.2 + 0.6 * torch.rand(8, 3, 8, 8)

    def state_after(draws):  # a generator's state after drawing these shapes from seed 1
        generator = torch.Generator().manual_seed(1)
        for shape in draws:
            torch.rand(*shape, generator=generator)
        return generator.get_state()

    for policy, draws in ((COLOUR, [(8, 5)]), (replace(COLOUR, hue=0.1), [(8, 5), (8,)])):
        generator = torch.Generator().manual_seed(1)
        colour_jitter(pixels, policy, generator)
        assert torch.equal(generator.get_state(), state_after(draws))  # no hue: the draws of before
    plain = colour_jitter(pixels, replace(COLOUR, grayscale_p=0.0), torch.Generator().manual_seed(1))
    hued_policy = replace(COLOUR, grayscale_p=0.0, jitter_p=1.0, hue=0.1)
    hued = colour_jitter(pixels, hued_policy, torch.Generator().manual_seed(1))
    same = colour_jitter(pixels, hued_policy, torch.Generator().manual_seed(1))
    assert torch.equal(hued, same) and not torch.allclose(hued, plain, atol=1e-3)
    assert replace(COLOUR, brightness=0.0, contrast=0.0, saturation=0.0, grayscale_p=0.0, hue=0.1).colour
    with pytest.raises(
        ValueError, match="hue must be in \\[0, 0.5\\] \\(a fraction of the colour circle\\), got 0.6"
    ):
        AugmentPolicy(hue=0.6)
    with pytest.raises(ValueError, match="colour jitter and grayscale need 3-channel"):
        augment(
            torch.rand(2, 1, 8, 8),
            replace(GRAYSCALE, hue=0.1, jitter_p=0.5),
            Normalizer((0.5,), (0.2,)),
            torch.Generator(),
        )


def test_blur_draws_last_keeps_each_image_mean_and_leaves_the_unchosen_sharp():
    """The optional Gaussian blur: drawn after everything else and only when asked, so the views
    under it are the sharp views smoothed; about blur_p of them, each keeping its mean colour."""
    normalizer = Normalizer((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = torch.randn(64, 3, 16, 16) * 0.5
    sharp = augment(x, COLOUR, normalizer, torch.Generator().manual_seed(3))
    blurred = augment(x, replace(COLOUR, blur_p=1.0), normalizer, torch.Generator().manual_seed(3))
    again = augment(x, replace(COLOUR, blur_p=1.0), normalizer, torch.Generator().manual_seed(3))
    assert torch.equal(blurred, again)

    def roughness(views):  # mean absolute difference of neighbouring pixels, per image
        return (views[..., 1:] - views[..., :-1]).abs().mean(dim=(1, 2, 3))

    smoother, rough = roughness(blurred), roughness(sharp)  # sigma 0.1 hardly smooths at all
    assert (smoother <= rough + 1e-6).all() and smoother.mean() < 0.8 * rough.mean()
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), sharp.mean(dim=(2, 3)), atol=0.05, rtol=0)
    half = augment(x, replace(COLOUR, blur_p=0.5), normalizer, torch.Generator().manual_seed(3))
    untouched = (half == sharp).flatten(1).all(1)
    assert 16 < int(untouched.sum()) < 48 and not torch.equal(half, sharp)
    flat = torch.full((2, 3, 8, 8), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, replace(COLOUR, blur_p=1.0), torch.Generator()), flat)
    with pytest.raises(ValueError, match="blur_sigma must be \\(lo, hi\\) with 0 < lo <= hi <= 3 pixels"):
        AugmentPolicy(blur_sigma=(0.0, 1.0))


def test_identity_policy_returns_the_input():
    identity = AugmentPolicy(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip=False,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
    )
    normalizer = Normalizer((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = (torch.rand(4, 3, 16, 16) - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.25
    x = normalizer.to_tensor((normalizer.to_pixels(x) * 255).round().byte().permute(0, 2, 3, 1).numpy())
    out = augment(x, identity, normalizer, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-4)


def test_views_of_a_set_size_are_the_crop_resized_to_it():
    whole_image = AugmentPolicy(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, jitter_p=0.0, grayscale_p=0.0, size=8
    )
    normalizer = Normalizer((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    pixels = torch.rand(4, 3, 16, 16)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (normalizer.mean, normalizer.std))
    x = (pixels - mean) / std
    out = augment(x, whole_image, normalizer, torch.Generator().manual_seed(0))
    halved = F.interpolate(x, size=8, mode="bilinear", align_corners=False)  # 2x2 means: no clipping
    assert out.shape == (4, 3, 8, 8) and torch.allclose(out, halved, atol=1e-5)
    views = augment(x, replace(COLOUR, size=8), normalizer, torch.Generator().manual_seed(0))
    assert views.shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="size must be None or a side of >= 8 pixels, got 4"):
        AugmentPolicy(size=4)


# -- training -----------------------------------------------------------------------------------


def test_returns_the_train_autoencoder_contract(data):
    model, history = _train(data)
    assert isinstance(model, AutoEncoder) and not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(set(h) == HISTORY_KEYS and math.isfinite(h["val_loss"]) for h in history)
    x = data[1].to_tensor(data[0][:5])
    pooled, latent = model.encoder.features(x, "pooled")
    assert pooled.shape == (5, 64) and latent.shape == (5, 8)  # 512 x 0.125; latent_dim
    torch.testing.assert_close(model.encoder.features(x, "bottleneck")[0], latent)
    torch.testing.assert_close(model.encoder(x), latent)
    encoded = encode_features(model, data[0][:5], data[1])
    torch.testing.assert_close(torch.from_numpy(encoded["pooled"]), pooled)
    assert encoded["bottleneck"].shape == (5, 8)
    with pytest.raises(ValueError, match="features must be one of bottleneck, pooled, got 'decoder'"):
        model.encoder.features(x, "decoder")


def test_same_seed_same_weights_other_seed_other_weights(data):
    first, _ = _train(data)
    again, _ = _train(data)
    other, _ = _train(data, TrainConfig(epochs=2, batch_size=16, device="cpu", seed=1))
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(again)))
    assert not all(
        torch.equal(a, b) for a, b in zip(_weights(first), _weights(other)) if a.is_floating_point()
    )


def _interrupted_after_epoch_one(data, folder, monkeypatch, **options):
    """Train with a checkpoint in ``folder`` and stop right after epoch 1's checkpoint."""
    images, normalizer = data
    saved = contrastive.save_checkpoint

    def save_then_stop(*args, **kwargs):
        saved(*args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(contrastive, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train_contrastive(
                images, MODEL, TRAIN, normalizer, checkpoint_dir=folder, progress=False, **options
            )


def _resumed(data, folder, **options):
    """Resume the run checkpointed in ``folder``."""
    images, normalizer = data
    return train_contrastive(
        images, MODEL, TRAIN, normalizer, checkpoint_dir=folder, resume=True, progress=False, **options
    )


def test_resume_equals_an_uninterrupted_run(data, tmp_path, monkeypatch):
    whole, whole_history = _train(data, mode="hybrid")
    _interrupted_after_epoch_one(data, tmp_path, monkeypatch, mode="hybrid")
    resumed, history = _resumed(data, tmp_path, mode="hybrid")
    for a, b in zip(_weights(whole), _weights(resumed)):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    assert [h["train_loss"] for h in history] == pytest.approx([h["train_loss"] for h in whole_history])
    assert {"train_contrastive", "train_reconstruction"} <= set(history[-1])
    with pytest.raises(ValueError, match="contrastive settings changed: \\['temperature'\\]"):
        _resumed(data, tmp_path, mode="hybrid", temperature=0.5)


def test_smaller_views_train_another_network_and_a_resume_must_keep_them(data, tmp_path):
    small, history = _train(data, view_size=8)
    again, _ = _train(data, view_size=8)
    full, _ = _train(data)
    assert all(torch.equal(a, b) for a, b in zip(_weights(small), _weights(again)))
    pairs = zip(_weights(small), _weights(full))
    assert not all(torch.equal(a, b) for a, b in pairs if a.is_floating_point())
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in history)
    x = data[1].to_tensor(data[0][:3])
    assert small.encoder.pooled(x).shape == (3, 64)  # features of the whole 16x16 images
    images, normalizer = data
    saved = {"checkpoint_dir": tmp_path, "progress": False}
    train_contrastive(images, MODEL, TRAIN, normalizer, view_size=8, **saved)
    with pytest.raises(ValueError, match="contrastive settings changed: \\['policy', 'view_size'\\]"):
        train_contrastive(images, MODEL, TRAIN, normalizer, resume=True, view_size=12, **saved)
    with pytest.raises(ValueError, match="view_size must be 0 or 16 \\(the image size\\), got 8"):
        _train(data, mode="hybrid", view_size=8)


def test_whitening_filters_decorrelate_patches_and_come_in_signed_pairs():
    from aegmm.nn.whitening import whitening_filters

    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(27, 27, generator=generator) * torch.linspace(0.1, 3.0, 27)
    patches = torch.randn(20_000, 27, generator=generator) @ mixing.T
    bank = whitening_filters(patches, 16, eps=1e-6)
    assert bank.shape == (16, 27) and torch.equal(bank[8:], -bank[:8])
    responses = torch.cov((patches.double() @ bank[:8].double().T).T)  # unit variance, uncorrelated
    assert torch.allclose(responses, torch.eye(8, dtype=torch.float64), atol=1e-3)
    leading = torch.linalg.eigh(torch.cov(patches.T.double()))[1][:, -1]
    assert abs(F.cosine_similarity(bank[0].double(), leading, dim=0)) > 0.999  # leading first
    assert whitening_filters(patches, 5).shape == (5, 27)  # an odd count: the leading filter again
    with pytest.raises(
        ValueError, match="expected \\(N >= 2, D\\) patches and 2 to 2D filters, got \\(1, 27\\)"
    ):
        whitening_filters(patches[:1], 16)


def test_a_stem_wider_than_the_patches_whitens_its_first_filters_and_keeps_the_rest():
    from aegmm.nn.whitening import whiten_conv

    conv = torch.nn.Conv2d(1, 24, 3, padding=1, bias=False)  # a 3x3 grayscale patch: 9 directions
    before = conv.weight.detach().clone()
    images = torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    whiten_conv(conv, images)
    weight = conv.weight.detach()
    assert torch.equal(weight[18:], before[18:]) and not torch.equal(weight[:18], before[:18])
    assert torch.equal(weight[9:18], -weight[:9])  # 9 whitening filters, then the same negated


@pytest.mark.parametrize("stem_init", ["whiten", "whiten-fixed"])
def test_a_whitened_stem_is_seeded_resumes_exactly_and_stays_fixed_when_asked(
    data, tmp_path, monkeypatch, stem_init
):
    first, _ = _train(data, stem_init=stem_init)
    again, _ = _train(data, stem_init=stem_init)
    plain, _ = _train(data)
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(again)))
    stem, plain_stem = first.encoder.stem[0].weight, plain.encoder.stem[0].weight
    assert stem.shape == plain_stem.shape == (8, 3, 3, 3) and not torch.equal(stem, plain_stem)
    assert torch.equal(stem[4:], -stem[:4]) == (stem_init == "whiten-fixed")  # trained: no longer pairs
    _interrupted_after_epoch_one(data, tmp_path, monkeypatch, stem_init=stem_init)
    resumed, _ = _resumed(data, tmp_path, stem_init=stem_init)
    for a, b in zip(_weights(first), _weights(resumed)):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    with pytest.raises(ValueError, match="contrastive settings changed: \\['stem_init'\\]"):
        _resumed(data, tmp_path)
    with pytest.raises(ValueError, match="stem_init must be one of random, whiten, whiten-fixed, got 'pca'"):
        _train(data, stem_init="pca")


@pytest.mark.parametrize("keys, other", [(("policy", "hue"), 0.1), (("stem_init",), "whiten")])
def test_a_checkpoint_written_before_a_setting_existed_resumes_as_it_trained(data, tmp_path, keys, other):
    images, normalizer = data
    saved = {"checkpoint_dir": tmp_path, "progress": False}
    whole, _ = train_contrastive(images, MODEL, TRAIN, normalizer, **saved)
    options = tmp_path / contrastive.OPTIONS_FILE
    record = json.loads(options.read_text())
    holder = record if len(keys) == 1 else record[keys[0]]
    del holder[keys[-1]]  # the options file as it was written before the field existed
    options.write_text(json.dumps(record))
    resumed, _ = train_contrastive(images, MODEL, TRAIN, normalizer, resume=True, **saved)
    assert all(torch.equal(a, b) for a, b in zip(_weights(whole), _weights(resumed)))
    holder[keys[-1]] = other  # a checkpoint trained with another value does not resume without it
    options.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=f"contrastive settings changed: \\['{keys[0]}'\\]"):
        train_contrastive(images, MODEL, TRAIN, normalizer, resume=True, **saved)


def test_a_cpu_with_bfloat16_instructions_trains_contrast_in_bfloat16_and_says_so(data, monkeypatch, capsys):
    from aegmm import precision

    monkeypatch.setattr(precision, "native_bfloat16", lambda device: True)
    images, normalizer = data
    one_epoch = TrainConfig(epochs=1, batch_size=16, device="cpu")
    _, history = train_contrastive(images, MODEL, one_epoch, normalizer, progress=True)
    said = capsys.readouterr().err
    assert "training in bfloat16 autocast: this CPU has bfloat16 instructions" in said
    assert math.isfinite(history[0]["train_loss"])
    train_contrastive(images, MODEL, replace(one_epoch, precision="float32"), normalizer, progress=True)
    assert "bfloat16" not in capsys.readouterr().err  # asked for float32: no autocast, nothing said


def test_hybrid_detached_decoder_leaves_the_encoder_to_nt_xent(data):
    simclr, _ = _train(data, TrainConfig(epochs=1, batch_size=16, device="cpu"))
    hybrid, _ = _train(data, TrainConfig(epochs=1, batch_size=16, device="cpu"), mode="hybrid")
    shared, _ = _train(
        data, TrainConfig(epochs=1, batch_size=16, device="cpu"), mode="hybrid", shared_gradients=True
    )
    encoder = [k for k in simclr.state_dict() if k.startswith("encoder.")]
    same = [torch.allclose(simclr.state_dict()[k], hybrid.state_dict()[k], atol=1e-6) for k in encoder]
    assert all(same)  # the MSE never reached the encoder
    assert not all(torch.allclose(simclr.state_dict()[k], shared.state_dict()[k], atol=1e-6) for k in encoder)
    assert not torch.equal(simclr.decoder.head.weight, hybrid.decoder.head.weight)


def test_bfloat16_autocast_trains(data):
    model, history = _train(data, TrainConfig(epochs=1, batch_size=16, device="cpu", precision="bfloat16"))
    assert math.isfinite(history[0]["train_loss"]) and next(model.parameters()).dtype == torch.float32


def test_options_are_checked(data):
    with pytest.raises(ValueError, match="mode must be one of simclr, hybrid"):
        _train(data, mode="byol")
    with pytest.raises(ValueError, match="temperature must be"):
        _train(data, temperature=0.0)
    with pytest.raises(TypeError):
        _train(data, tempreature=0.5)


def test_a_torchrun_launch_is_refused_in_one_line_that_names_the_way_out(data, monkeypatch):
    monkeypatch.setattr(contrastive.distributed, "launched_by_torchrun", lambda: True)
    with pytest.raises(ValueError, match="got a torchrun launch; .* with --objective reconstruction$"):
        _train(data)


def test_a_config_with_auto_settings_trains_as_its_objective(data):
    # TrainConfig() leaves objective and batch size "auto": the trainer resolves them as contrastive
    _, history = _train(data, TrainConfig(epochs=1, device="cpu"))
    assert math.isfinite(history[0]["train_loss"])
