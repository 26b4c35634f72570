"""Ensembles of autoencoders (TrainConfig.members): the auto rule, exact members, features, files."""

import json

import numpy as np
import pytest
import torch

from aegmm import ImageClusterer, load
from aegmm.cli import main
from aegmm.config import (
    AUTO_MEMBERS,
    AUTO_MEMBERS_MIN_TRAIN,
    UMAP_MIN_IMAGES,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from aegmm.nn import AutoEncoder, Ensemble
from aegmm.pipeline import resolve_auto
from aegmm.scaling import normalizer
from conftest import TINY, TINY_ARGS, two_group_images

PAIR = TINY | {"members": 2, "n_init": 3}


@pytest.fixture(scope="module")
def pair():
    images, labels = two_group_images(48)
    return ImageClusterer(**PAIR).fit(images), images, labels


@pytest.fixture(scope="module")
def singles(pair):
    """One-network runs seeded 0 and 1: the pair's members, trained alone."""
    images = pair[1]
    return [ImageClusterer(**(PAIR | {"members": 1, "seed": index})).fit(images) for index in range(2)]


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("objective", "channels", "n_train", "expected"),
    [
        ("reconstruction", 1, 7200, AUTO_MEMBERS),  # 8,000 MNIST digits less validation
        ("reconstruction", 1, 1617, AUTO_MEMBERS),  # scikit-learn's digits less validation
        ("reconstruction", 1, AUTO_MEMBERS_MIN_TRAIN, AUTO_MEMBERS),  # 50 images: fewest measured with 2
        ("reconstruction", 1, AUTO_MEMBERS_MIN_TRAIN - 1, 1),  # 27 and 42 digits were measured with one
        ("reconstruction", 3, 7200, 1),
        ("contrastive", 1, 7200, 1),
        ("reconstruction", 1, None, "auto"),  # unknown collection: left for later
    ],
)
def test_auto_members_follow_the_kind_of_image_and_the_collection(objective, channels, n_train, expected):
    resolved = TrainConfig().resolve(channels=channels, objective=objective, n_train=n_train)
    assert resolved.members == expected


@pytest.mark.parametrize(
    ("n_images", "reducer", "members"),
    [
        (UMAP_MIN_IMAGES - 1, "pca", 1),
        (UMAP_MIN_IMAGES, "umap", 1),  # UMAP from 20 images, one network: measured down to 20
        (49, "umap", 1),
        (50, "umap", AUTO_MEMBERS),  # 45 training images: two networks, measured from 50
        (20_000, "umap", AUTO_MEMBERS),
    ],
)
def test_a_grayscale_collection_runs_umap_from_20_images_and_two_members_from_50(n_images, reducer, members):
    config = resolve_auto(RunConfig(model=ModelConfig(channels=1)), n_images, progress=False)
    assert (config.mixture.reducer, config.train.members) == (reducer, members)


def test_members_are_checked_and_a_run_saved_before_them_had_one_network():
    for bad in (0, -1, "three", 2.5):
        with pytest.raises(ValueError, match="members must be"):
            TrainConfig(members=bad)
    old = RunConfig.from_dict({"train": {"seed": 3}, "mixture": {"features": "bottleneck"}})
    assert old.train.members == 1 and RunConfig().train.members == "auto" and old.mixture.parts == 1
    # saved when the ensemble scaled each member to unit length itself: the mixture's l2 does it now
    saved = {"train": {"members": 2}, "mixture": {"features": "bottleneck", "normalize": "none"}}
    two = RunConfig.from_dict(saved)
    assert (two.mixture.parts, two.mixture.normalize) == (2, "l2")


def test_each_member_is_the_one_network_run_of_its_seed(pair, singles):
    """Member i of the ensemble seeded s trains exactly as a one-network run seeded s + i, so
    `benchmarks/ensemble_probe.py` may build ensembles from cached one-network runs."""
    clusterer, images, _ = pair
    assert isinstance(clusterer.autoencoder_, Ensemble) and clusterer.autoencoder_.members == 2
    for index in range(2):
        single = singles[index].autoencoder_
        assert _same(_weights(clusterer.autoencoder_.encoder.members[index]), _weights(single.encoder))
        assert _same(_weights(clusterer.autoencoder_.decoder.members[index]), _weights(single.decoder))


def test_features_are_the_members_vectors_side_by_side_and_the_mixture_weighs_each_the_same(pair, singles):
    clusterer, images, _ = pair
    features = clusterer.transform(images)
    assert features.shape == (48, 2 * TINY["latent_dim"]) == (48, clusterer.config_.feature_dim)
    halves = np.split(features, 2, axis=1)
    for half, single in zip(halves, singles, strict=True):  # each member's own vectors, lengths kept
        np.testing.assert_allclose(half, single.transform(images), atol=1e-6)
    assert not np.allclose(halves[0], halves[1])  # two networks, not one copied
    parts = clusterer.config_.mixture.parts
    assert parts == clusterer.mixture_.config.parts == 2  # its l2 puts each member's at length 1/sqrt(2)
    scaled = np.split(normalizer("l2", parts, features.shape[1]).transform(features), 2, axis=1)
    assert all(np.allclose(np.linalg.norm(h, axis=1), 1 / np.sqrt(2)) for h in scaled)


def test_the_reconstruction_is_the_members_mean(pair):
    clusterer, images, _ = pair
    ensemble = clusterer.autoencoder_.eval()
    x = clusterer.normalizer_.to_tensor(images[:4], "cpu")
    with torch.no_grad():
        each = [AutoEncoder.forward(_as_network(ensemble, i), x)[0] for i in range(2)]
        mean, z = ensemble(x)
    assert z.shape == (4, 2 * TINY["latent_dim"])
    assert torch.allclose(mean, (each[0] + each[1]) / 2, atol=1e-6)
    assert clusterer.reconstruct(images[:4]).shape == (4, 16, 16, 3)


def _as_network(ensemble: Ensemble, index: int) -> AutoEncoder:
    network = AutoEncoder(ensemble.config)
    network.encoder, network.decoder = ensemble.encoder.members[index], ensemble.decoder.members[index]
    return network.eval()


def test_history_is_the_members_mean_per_epoch(pair):
    clusterer, _, _ = pair
    history = clusterer.history_
    assert [h["epoch"] for h in history] == [1, 2]
    for entry in history:
        assert len(entry["member_train_loss"]) == 2
        assert entry["train_loss"] == pytest.approx(np.mean(entry["member_train_loss"]))


def test_save_and_load_give_the_same_ensemble_and_clusters(pair, tmp_path):
    clusterer, images, _ = pair
    clusterer.save(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["members"] == 2
    loaded = load(tmp_path / "run", progress=False)
    assert isinstance(loaded.autoencoder_, Ensemble)
    assert _same(_weights(loaded.autoencoder_), _weights(clusterer.autoencoder_))
    assert np.array_equal(loaded.transform(images), clusterer.transform(images))
    assert np.array_equal(loaded.predict(images), clusterer.predict(images))


def test_a_run_saved_with_one_member_less_is_refused(pair, tmp_path):
    clusterer, _, _ = pair
    folder = clusterer.save(tmp_path / "run")
    config = json.loads((folder / "config.json").read_text())
    config["train"]["members"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the network"):
        load(folder, progress=False)


def test_an_interrupted_ensemble_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    images, _ = two_group_images(32)
    full = ImageClusterer(**PAIR).fit(images, checkpoint_dir=tmp_path / "full").autoencoder_
    ImageClusterer(**(PAIR | {"epochs": 1})).fit(images, checkpoint_dir=tmp_path / "cut")
    assert {p.name for p in (tmp_path / "cut").iterdir()} == {"member0", "member1"}
    resumed = ImageClusterer(**PAIR).fit(images, checkpoint_dir=tmp_path / "cut", resume=True).autoencoder_
    assert _same(_weights(resumed), _weights(full))


def test_a_resume_with_more_members_trains_only_the_new_ones_and_equals_a_fresh_run(tmp_path):
    images, _ = two_group_images(32)
    triple = PAIR | {"members": 3}
    full = ImageClusterer(**triple).fit(images, checkpoint_dir=tmp_path / "full").autoencoder_
    ImageClusterer(**PAIR).fit(images, checkpoint_dir=tmp_path / "grown")
    grown = ImageClusterer(**triple).fit(images, checkpoint_dir=tmp_path / "grown", resume=True).autoencoder_
    assert _same(_weights(grown), _weights(full))


@pytest.mark.parametrize(
    ("saved", "now", "message"),
    [
        (1, 2, "holds the checkpoint of one autoencoder, got members 2; resume with --members 1"),
        (2, 1, r"ensemble \(member0, member1\), got members 1; resume with --members 2 or more"),
    ],
)
def test_a_resume_is_refused_where_the_checkpoints_hold_another_number_of_networks(
    tmp_path, saved, now, message
):
    images, _ = two_group_images(32)
    ImageClusterer(**(PAIR | {"members": saved, "epochs": 1})).fit(images, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=message):  # not a silent fresh start beside the checkpoints
        ImageClusterer(**(PAIR | {"members": now})).fit(images, checkpoint_dir=tmp_path, resume=True)


def test_the_command_line_trains_assigns_and_reports_the_members_it_is_given(tmp_path):
    images, labels = two_group_images(40)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "train.npz"), "--out", str(run), *TINY_ARGS, "--members", "2"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["members"] == 2
    out = tmp_path / "new.csv"
    assert main(["assign", str(run), str(tmp_path / "train.npz"), "--out", str(out), "--quiet"]) == 0
    assert len(out.read_text().splitlines()) == 41
    report = tmp_path / "report"
    assert main(["evaluate", str(run), str(tmp_path / "train.npz"), "--out", str(report), "--quiet"]) == 0
    assert json.loads((report / "metrics.json").read_text())["members"] == 2
    assert "<td>Autoencoders (--members)</td><td>2 (side by side;" in (report / "report.html").read_text()


def test_fit_says_when_auto_trains_more_than_one_network(capsys):
    gray = RunConfig(model=ModelConfig(channels=1))
    assert resolve_auto(gray, 8000, progress=True).train.members == AUTO_MEMBERS
    assert f"members {AUTO_MEMBERS}" in capsys.readouterr().err
    assert resolve_auto(gray, UMAP_MIN_IMAGES - 1, progress=True).train.members == 1
    assert "members" not in capsys.readouterr().err  # one network: nothing to say


def test_fit_help_states_the_members_rule():
    from aegmm.cli import build_parser

    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    text = " ".join(fit.format_help().split())
    assert f"auto: {AUTO_MEMBERS} for a single-channel autoencoder" in text
    rule = f"on {AUTO_MEMBERS_MIN_TRAIN}+ training images, else 1 (default auto)"
    assert rule in text  # the whole comment, up to the default
