"""The encoder's training objective through the pipeline: reconstruction, contrastive, hybrid."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import aegmm
from aegmm import ImageClusterer
from aegmm import config as config_module
from aegmm.cli import main
from aegmm.cli_parser import build_parser
from aegmm.config import UMAP_MIN_IMAGES, TrainConfig
from aegmm.evaluation.evaluate import evaluate_run
from aegmm.evaluation.report import NO_DECODER
from aegmm.precision import native_bfloat16, precision_plan
from conftest import TINY, TINY_ARGS, two_group_images


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return two_group_images(48)[0]


@pytest.mark.parametrize("objective", ["contrastive", "hybrid"])
def test_each_objective_fits_predicts_and_survives_save_and_load(objective, images, tmp_path):
    clusterer = ImageClusterer(**(TINY | {"objective": objective})).fit(images)
    assert clusterer.config_.train.objective == objective
    assert clusterer.predict_proba(images).shape == (48, 2)
    loaded = aegmm.load(clusterer.save(tmp_path / "run"), progress=False)
    assert loaded.objective == objective
    np.testing.assert_array_equal(loaded.predict(images), clusterer.predict(images))
    np.testing.assert_allclose(loaded.score_samples(images), clusterer.score_samples(images), rtol=1e-6)


def test_the_same_seed_gives_the_same_contrastive_model(images):
    a, b = (ImageClusterer(**(TINY | {"objective": "contrastive"})).fit(images) for _ in range(2))
    np.testing.assert_array_equal(a.transform(images), b.transform(images))
    c = ImageClusterer(**(TINY | {"objective": "contrastive", "seed": 1})).fit(images)
    assert not np.array_equal(a.transform(images), c.transform(images))


def test_hybrid_trains_the_decoder_and_contrastive_leaves_it(images):
    longer = {"epochs": 10, "lr": 3e-3}  # the decoder learns from detached features: slowly
    longer["precision"] = "float32"  # the same arithmetic on every CPU (auto: bfloat16 where it is native)
    hybrid = ImageClusterer(**(TINY | longer | {"objective": "hybrid"})).fit(images)
    simclr = ImageClusterer(**(TINY | longer | {"objective": "contrastive"})).fit(images)
    error = {
        name: float(np.mean((c.reconstruct(images) - images / 255.0) ** 2))
        for name, c in (("hybrid", hybrid), ("contrastive", simclr))
    }
    assert error["hybrid"] < 0.85 * error["contrastive"], error


def test_contrastive_on_grayscale_images_uses_the_grayscale_policy(tmp_path):
    gray = two_group_images(40, channels=1)[0]
    clusterer = ImageClusterer(**(TINY | {"objective": "contrastive"})).fit(gray)
    assert clusterer.config_.model.channels == 1 and clusterer.predict(gray).shape == (40,)


def test_the_command_line_saves_the_objective_and_refuses_an_unknown_one(tmp_path, capsys):
    np.savez(tmp_path / "train.npz", images=two_group_images(40)[0])
    args = ["fit", str(tmp_path / "train.npz"), "--out", str(tmp_path / "run"), *TINY_ARGS]
    assert main([*args, "--objective", "contrastive", "--temperature", "0.3"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (saved["objective"], saved["temperature"]) == ("contrastive", 0.3)
    with pytest.raises(SystemExit):
        main([*args, "--objective", "magic"])
    assert "--objective invalid choice: 'magic'" in capsys.readouterr().err
    assert (
        main([*args[:3], str(tmp_path / "b"), *args[4:], "--objective", "hybrid", "--temperature", "0"]) == 2
    )
    assert "--temperature must be a finite number > 0, got 0.0" in capsys.readouterr().err


def test_view_size_is_saved_loaded_and_refused_where_it_cannot_work(images, tmp_path, capsys):
    np.savez(tmp_path / "train.npz", images=images)
    args = ["fit", str(tmp_path / "train.npz"), *TINY_ARGS, "--objective", "contrastive"]
    assert main([*args, "--out", str(tmp_path / "run"), "--view-size", "8"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["view_size"] == 8
    assert aegmm.load(tmp_path / "run", progress=False).view_size == 8
    assert main([*args, "--out", str(tmp_path / "big"), "--view-size", "32"]) == 2
    said = "--view-size must be 0 or between 8 (the small stem's downsampling) and 16 (the image size)"
    assert said in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "h"), "--view-size", "8", "--objective", "hybrid"]) == 2
    err = capsys.readouterr().err
    assert "view_size must be 0 or 16 (the image size), got 8: use --objective contrastive" in err
    assert not any((tmp_path / name).exists() for name in ("big", "h"))


def test_stem_init_reaches_training_is_saved_and_loaded_and_refused_in_one_line(images, tmp_path, capsys):
    np.savez(tmp_path / "train.npz", images=images)
    args = ["fit", str(tmp_path / "train.npz"), *TINY_ARGS, "--objective", "contrastive"]
    assert main([*args, "--out", str(tmp_path / "run"), "--stem-init", "whiten-fixed"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["stem_init"] == "whiten-fixed"
    loaded = aegmm.load(tmp_path / "run", progress=False)
    stem = loaded.autoencoder_.encoder.stem[0].weight  # fixed: still the whitening pairs after training
    assert loaded.stem_init == "whiten-fixed" and torch.equal(stem[4:], -stem[:4])
    with pytest.raises(SystemExit, match="2"):
        main([*args, "--out", str(tmp_path / "bad"), "--stem-init", "pca"])
    err = capsys.readouterr().err
    assert "--stem-init invalid choice: 'pca' (choose from 'random', 'whiten', 'whiten-fixed')" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "channels,objective,batch_size,noise,features,dim",
    [(3, "contrastive", 256, 0.0, "pooled", 64), (1, "reconstruction", 128, 0.1, "bottleneck", 8)],
)
def test_auto_trains_colour_by_contrast_and_single_channel_by_reconstruction(
    channels, objective, batch_size, noise, features, dim, tmp_path, capsys
):
    n = UMAP_MIN_IMAGES - 1  # too few for UMAP whatever the objective
    images = two_group_images(n, channels=channels)[0]
    auto = {k: v for k, v in TINY.items() if k not in ("objective", "batch_size")} | {"progress": True}
    clusterer = ImageClusterer(**auto).fit(images)
    train = clusterer.config_.train
    assert (train.objective, train.batch_size, train.noise) == (objective, batch_size, noise)
    kind = "colour" if channels == 3 else "single-channel"
    said = capsys.readouterr().err
    native = native_bfloat16(torch.device("cpu"))  # contrastive training: bfloat16 where the CPU has it
    precision = "bfloat16" if native and objective == "contrastive" else "float32"
    assert train.precision == precision
    chosen = f"objective {objective}, batch_size {batch_size}, precision {precision}"
    chosen += f", noise {noise}, reducer pca" if objective == "reconstruction" else ", reducer pca"
    assert f"settings for {n} {kind} images: {chosen}" in said
    assert f"candidates 1, features {features}\n" in said
    assert clusterer.transform(images).shape == (n, dim)  # pooled: 512 x 0.125; bottleneck: latent_dim
    loaded = aegmm.load(clusterer.save(tmp_path / "run"), progress=False)
    assert (loaded.objective, loaded.batch_size, loaded.noise, loaded.features) == (
        objective,
        batch_size,
        noise,
        features,
    )
    np.testing.assert_array_equal(loaded.transform(images), clusterer.transform(images))


def test_auto_precision_follows_the_device_and_the_objective_and_sets_the_contrastive_epochs():
    def chosen(objective, device_type, native, **given):
        train = TrainConfig(**given).resolve(
            objective=objective, n_train=14_400, device_type=device_type, native_bf16=native
        )
        return train.precision, train.epochs

    assert chosen("contrastive", "cpu", True) == ("bfloat16", config_module.AUTO_EPOCHS_MIXED)
    assert chosen("hybrid", "cpu", True) == ("bfloat16", config_module.AUTO_EPOCHS_MIXED)
    assert chosen("contrastive", "cpu", False) == ("float32", config_module.AUTO_EPOCHS)  # emulated: no
    assert chosen("reconstruction", "cpu", True) == ("float32", config_module.AUTO_EPOCHS)  # the study's
    assert chosen("reconstruction", "cuda", False) == ("float16", config_module.AUTO_EPOCHS)
    assert chosen("contrastive", "cuda", True) == ("bfloat16", config_module.AUTO_EPOCHS_MIXED)
    assert chosen("contrastive", "mps", True) == ("float32", config_module.AUTO_EPOCHS)
    assert chosen("contrastive", "cpu", False, precision="bfloat16") == ("bfloat16", 22)  # asked for
    assert chosen("contrastive", "cpu", True, precision="float32") == ("float32", 10)
    assert chosen("contrastive", "cpu", True, epochs=4) == ("bfloat16", 4)
    unknown = TrainConfig().resolve(objective="contrastive", n_train=14_400)  # no device yet: left auto
    assert unknown.precision == "auto" and unknown.epochs == config_module.AUTO_EPOCHS
    assert precision_plan("auto", "cpu", True, "contrastive").dtype == torch.bfloat16
    assert precision_plan("auto", "cpu", True).dtype is None  # reconstruction
    assert isinstance(native_bfloat16(torch.device("cpu")), bool)


def test_auto_epochs_are_chosen_for_the_collection_said_saved_and_offered_by_the_cli(
    images, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(config_module, "AUTO_EPOCHS", 1)
    monkeypatch.setattr(config_module, "AUTO_MIN_STEPS", 6)  # 43 of 48 train: 3 batches of 16 an epoch
    clusterer = ImageClusterer(**(TINY | {"epochs": "auto", "progress": True})).fit(images)
    assert clusterer.config_.train.epochs == 2 and len(clusterer.history_) == 2
    said = capsys.readouterr().err
    assert "settings for 48 colour images: epochs 2, precision float32, noise 0.0, reducer pca" in said
    assert "on 48 latent vectors" in said  # reconstruction: the mixture clusters the bottleneck
    pooled = replace(clusterer.config_, mixture=replace(clusterer.config_.mixture, features="pooled"))
    clusterer._fit_mixture(clusterer.transform(images), pooled)
    assert "on 48 pooled feature vectors" in capsys.readouterr().err
    assert aegmm.load(clusterer.save(tmp_path / "run"), progress=False).epochs == 2
    assert build_parser().parse_args(["fit", "x", "--out", "y", "--epochs", "auto"]).epochs == "auto"
    assert build_parser().parse_args(["fit", "x", "--out", "y", "--epochs", "7"]).epochs == 7


def test_training_settings_given_are_kept_and_a_trainer_names_its_own_objective():
    assert TrainConfig(objective="hybrid").resolve(channels=1).batch_size == 256
    assert TrainConfig(batch_size=64).resolve(channels=3) == TrainConfig(
        objective="contrastive", batch_size=64, noise=0.0, members=1
    )
    assert TrainConfig().resolve(channels=3, objective="reconstruction").batch_size == 128
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1 or 'auto', got 'many'"):
        TrainConfig(batch_size="many")
    with pytest.raises(
        ValueError, match="objective must be one of auto, reconstruction, contrastive, hybrid"
    ):
        TrainConfig(objective="magic")


def test_the_report_of_a_contrastive_run_has_no_reconstructions(images, tmp_path):
    clusterer = ImageClusterer(**(TINY | {"objective": "contrastive"})).fit(images)
    np.savez(tmp_path / "images.npz", images=images)
    run = clusterer.save(tmp_path / "run")
    report = evaluate_run(run, tmp_path / "images.npz", tmp_path / "report", progress=False)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["objective"] == "contrastive"
    assert metrics["reconstruction_mse"] is None and metrics["psnr"] is None
    html = report.read_text()
    assert NO_DECODER in html and 'id="fig-reconstructions"' not in html
    assert 'id="fig-loss"' in html and 'id="fig-encoded"' in html


def test_features_can_be_chosen_and_the_cli_and_assign_follow_them(images, tmp_path, capsys):
    contrastive = TINY | {"objective": "contrastive"}
    bottleneck = ImageClusterer(**(contrastive | {"features": "bottleneck"})).fit(images)
    pooled = ImageClusterer(**contrastive).fit(images)  # auto: pooled for a contrastive encoder
    assert (bottleneck.features, pooled.config_.mixture.features) == ("bottleneck", "pooled")
    assert bottleneck.transform(images).shape == (48, 8) and pooled.transform(images).shape == (48, 64)
    # one encoder (same seed), two readings of it: the latent is the bottleneck of the pooled output
    np.testing.assert_array_equal(bottleneck.reconstruct(images), pooled.reconstruct(images))
    latents, _ = pooled.reconstruct(images, return_latents=True)
    np.testing.assert_array_equal(latents, pooled.transform(images))

    np.savez(tmp_path / "train.npz", images=images)
    fit = ["fit", str(tmp_path / "train.npz"), *TINY_ARGS, "--out", str(tmp_path / "run")]
    assert main([*fit, "--features", "pooled"]) == 0  # TINY_ARGS train by reconstruction
    assert json.loads((tmp_path / "run" / "config.json").read_text())["mixture"]["features"] == "pooled"
    assign = ["assign", str(tmp_path / "run"), str(tmp_path / "train.npz"), "--out", str(tmp_path / "a.csv")]
    assert main([*assign, "--latents", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (48, 64)
    with pytest.raises(SystemExit):
        main([*fit[:-1], str(tmp_path / "other"), "--features", "head"])
    assert "--features invalid choice: 'head'" in capsys.readouterr().err


def test_a_run_saved_before_features_existed_reads_its_bottleneck(images, tmp_path):
    run = ImageClusterer(**(TINY | {"objective": "contrastive", "features": "bottleneck"})).fit(images)
    folder = run.save(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    del config["mixture"]["features"]  # config.json as runs were saved before the setting
    (folder / "config.json").write_text(json.dumps(config))
    loaded = aegmm.load(folder, progress=False)
    assert loaded.features == "bottleneck"
    np.testing.assert_array_equal(loaded.predict(images), run.predict(images))

    pooled = ImageClusterer(**(TINY | {"objective": "contrastive"})).fit(images).save(tmp_path / "new")
    config = json.loads((pooled / "config.json").read_text())
    config["mixture"]["features"] = "bottleneck"  # a mixture on 64 pooled numbers claims 8
    (pooled / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"expected 8 dimensions \(bottleneck features\), got \(64,\)"):
        aegmm.load(pooled, progress=False)
